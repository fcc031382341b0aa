"""Exceptions raised by recforge.

Every error a user can cause by their input is one of these, with a message that names the
file, line, column or parameter at fault. The CLI prints the message on one line and exits
with status 2; library callers can catch :class:`RecforgeError`.
"""

from __future__ import annotations


class RecforgeError(Exception):
    """Base class of every error recforge raises on purpose."""


class DataError(RecforgeError, ValueError):
    """Bad input data: a file that cannot be read, a malformed line, a missing column."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 column: str | None = None, row: int | None = None):
        self.source = source
        self.line = line
        self.row = row
        self.column = column
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        self.detail = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(RecforgeError, ValueError):
    """A bad hyperparameter, option or configuration key."""


class ModelError(RecforgeError, RuntimeError):
    """A model used wrongly (not fitted, unsupported operation) or a bad saved artefact."""
