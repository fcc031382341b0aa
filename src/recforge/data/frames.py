"""Validating a table of events and mapping its ids to indices.

Everything that turns columns of external ids, values and timestamps into the index arrays
of :class:`~recforge.data.interactions.Interactions` lives here, whatever the columns came
from (a DataFrame, a CSV file, Parquet batches): finding the user / item / rating /
timestamp columns, parsing ids, numbers and timestamps (errors name the source, the line or
row and the column), mapping ids through vocabularies, and the policy for repeated
(user, item) pairs.

Duplicate pairs follow an explicit policy (``duplicates=``): by default they are an error,
because silently summing or dropping them changes what a model learns; pass ``"last"`` for
re-ratings (keep the latest), ``"sum"`` for click / play counts.

This module returns plain arrays (:class:`IndexedEvents`), never an ``Interactions``: the
class builds itself from them (``Interactions.from_frame``, ``Interactions.from_events``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Literal

import numpy as np
import pandas as pd

from recforge.data.parsing import parse_ids, parse_numbers, parse_timestamps, shown
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = [
    "COLUMN_ALIASES",
    "DUPLICATE_POLICIES",
    "Columns",
    "DuplicatePolicy",
    "IndexedEvents",
    "UnknownPolicy",
    "check_policies",
    "dedupe",
    "events_from_frame",
    "extract_columns",
    "index_columns",
    "map_ids",
    "parse_columns",
    "resolve_columns",
    "resolve_duplicates",
]

DuplicatePolicy = Literal["error", "first", "last", "sum", "max", "mean"]
UnknownPolicy = Literal["error", "drop"]

#: The policies for repeated (user, item) pairs (``duplicates=``, ``--duplicates``).
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "first", "last", "sum", "max", "mean")

#: Names under which the canonical columns are found when no mapping is given
#: (compared case-insensitively).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid", "uid", "user_idx", "customer_id", "visitor_id",
             "visitorid", "session_id"),
    "item": ("item", "item_id", "itemid", "iid", "movie_id", "movieid", "product_id",
             "productid", "article_id", "track_id", "book_id", "isbn"),
    "rating": ("rating", "ratings", "value", "score", "weight", "count", "play_count",
               "playcount", "stars"),
    "timestamp": ("timestamp", "ts", "time", "datetime", "date", "event_time", "unix_time"),
    # `session_id` names the user when there is no user column (session logs): a column
    # already read as the user is not read again as the session
    "session": ("session", "session_id", "sessionid", "visit_id", "visitid"),
}


@dataclass(frozen=True)
class IndexedEvents:
    """Validated events as index arrays over two vocabularies: what ``Interactions`` holds.

    ``user`` and ``item`` are int32 indices into ``users`` and ``items``; ``value`` is
    float32 (or ``None`` for implicit feedback), ``timestamp`` int64 seconds (or ``None``),
    ``session`` int64 session ids (or ``None``). No (user, item) pair repeats. Events are
    in input order (the order that breaks ties between equal timestamps).
    """

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray | None
    timestamp: np.ndarray | None
    users: Vocabulary
    items: Vocabulary
    source: str | None
    session: np.ndarray | None = None


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``"user=userId,item=movieId"`` (the CLI's ``--columns``) into a mapping."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        mapping = dict(spec)
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise DataError(f"column mapping {part!r} must look like canonical=name, "
                                "e.g. user=userId")
            key, _, val = part.partition("=")
            key = key.strip()
            if key in mapping:  # the later one would silently win
                raise DataError(f"column mapping names {key} twice ({mapping[key]!r} and "
                                f"{val.strip()!r}); give one column per role")
            mapping[key] = val.strip()
    for key in mapping:
        if key not in COLUMN_ALIASES:
            raise DataError(f"unknown canonical column {key!r} in column mapping; "
                            f"expected some of {sorted(COLUMN_ALIASES)}")
    return mapping


# ---------------------------------------------------------------------------------------
# column resolution and validation
@dataclass
class Columns:
    """Validated raw columns of one source, before ids are mapped to indices."""

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray | None
    timestamp: np.ndarray | None
    where: np.ndarray  # line (or row) number of each event, for messages
    source: str | None
    unit: str  # "line" or "row"
    session: np.ndarray | None = None  # raw session ids (int64 or text), when read

    def locate(self, i: int) -> dict[str, Any]:
        return {"source": self.source, self.unit: int(self.where[i])}


def resolve_columns(frame_cols: Sequence[Any], columns: Mapping[str, str] | None,
                    source: str | None, warn: bool = True) -> dict[str, Any]:
    """The column holding each canonical role (``user``, ``item`` and, when found,
    ``rating``, ``timestamp`` and ``session``): named in ``columns`` or found among the
    aliases.

    ``warn`` logs a warning for a column that looks like a misspelt rating or timestamp.
    """
    present = [str(c) for c in frame_cols]
    seen: dict[str, list[int]] = {}
    for k, name in enumerate(present, start=1):
        seen.setdefault(name, []).append(k)
    twice = {name: at for name, at in seen.items() if len(at) > 1}
    if twice:  # which of the two would be read is anyone's guess: refuse
        name, at = next(iter(twice.items()))
        raise DataError(f"column name {name!r} appears more than once (columns "
                        f"{', '.join(map(str, at))}); rename all but one", source=source)
    by_lower: dict[str, list[str]] = {}
    for c in present:
        by_lower.setdefault(c.lower(), []).append(c)
    resolved: dict[str, Any] = {}
    columns = dict(columns or {})
    for canon, aliases in COLUMN_ALIASES.items():
        if canon in columns:
            name = columns[canon]
            if name not in present:
                hint = get_close_matches(name, present, n=1)
                raise DataError(
                    f"column {name!r} (given for {canon}) not found; columns present: "
                    f"{present}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                    source=source)
            resolved[canon] = frame_cols[present.index(name)]
            continue
        for alias in aliases:
            if alias in by_lower:
                found = by_lower[alias]
                if canon == "session":  # `session_id` may already be the user column
                    found = [c for c in found
                             if c not in {str(v) for v in resolved.values()}]
                if len(found) > 1:  # "User" and "user": unless the others are mapped
                    found = [c for c in found if c not in columns.values()]
                if len(found) > 1:
                    raise DataError(
                        f"columns {found} all name the {canon} (names are matched without "
                        f"case); name the one to read with columns={{'{canon}': "
                        f"'<column>'}} (CLI: --columns {canon}=<column>) or rename the "
                        "others", source=source)
                if found:
                    resolved[canon] = frame_cols[present.index(found[0])]
                    break
    for canon in ("user", "item"):
        if canon not in resolved:
            hint = get_close_matches(canon, [c.lower() for c in present], n=1, cutoff=0.5)
            raise DataError(
                f"no {canon} column: columns present are {present}; name it with "
                f"columns={{'{canon}': '<column>'}} (CLI: --columns {canon}=<column>)"
                + (f"; did you mean {by_lower[hint[0]][0]!r}?" if hint else ""),
                source=source)
    roles: dict[str, str] = {}
    for canon, col in resolved.items():
        if str(col) in roles:
            raise DataError(f"column {str(col)!r} would be read as both the "
                            f"{roles[str(col)]} and the {canon}; give each role its own "
                            "column (columns=, CLI --columns)", source=source)
        roles[str(col)] = canon
    if warn:  # a misspelt rating or timestamp column would leave the data without them
        _warn_misspelt(resolved, present, source)
    return resolved


def _warn_misspelt(resolved: dict[str, Any], present: list[str], source: str | None) -> None:
    """Log a warning for an unread column whose name is close to a rating or timestamp
    alias, when the data has no such column."""
    taken = {str(c) for c in resolved.values()}
    for canon in ("rating", "timestamp"):
        if canon in resolved:
            continue
        for col in present:
            if col in taken:
                continue
            hint = get_close_matches(col.lower(), COLUMN_ALIASES[canon], n=1, cutoff=0.8)
            if hint:
                _log.warning("%s: column %r is not read; did you mean %r (the %s)? Name "
                             "it with --columns %s=%s", source or "data", col, hint[0],
                             canon, canon, col)
                break


def extract_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None,
                    source: str | None, where: np.ndarray | None, unit: str) -> Columns:
    """The validated raw columns of a frame (``where``: each row's line or row number,
    ``None`` for ``1..n``; ``unit``: ``"line"`` or ``"row"``)."""
    if where is None:
        where = np.arange(1, len(frame) + 1)
    where = np.asarray(where)
    resolved = resolve_columns(list(frame.columns), columns, source)
    user = parse_ids(frame[resolved["user"]], str(resolved["user"]), where, source, unit)
    item = parse_ids(frame[resolved["item"]], str(resolved["item"]), where, source, unit)
    value = None
    if "rating" in resolved:
        rating = parse_numbers(frame[resolved["rating"]], str(resolved["rating"]), where,
                               source, unit)
        huge = np.abs(rating) > np.finfo(np.float32).max  # would be stored as inf
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise DataError(f"{rating[i]:g} is too large for a rating (float32)",
                            source=source, column=str(resolved["rating"]),
                            **{unit: int(where[i])})
        value = rating.astype(np.float32)
    timestamp = None
    if "timestamp" in resolved:
        timestamp = parse_timestamps(frame[resolved["timestamp"]],
                                     str(resolved["timestamp"]), where, source, unit)
    session = None
    if "session" in resolved:
        session = parse_ids(frame[resolved["session"]], str(resolved["session"]), where,
                            source, unit)
    return Columns(user, item, value, timestamp, where, source, unit, session)


def session_codes(session: np.ndarray | None) -> np.ndarray | None:
    """Session ids as int64: integer ids as they are, other ids numbered ``0, 1, ...`` in
    order of first appearance (so text session ids are comparable within one file)."""
    if session is None:
        return None
    if session.dtype.kind in "iu":
        return session.astype(np.int64)
    return pd.factorize(session)[0].astype(np.int64)


# ---------------------------------------------------------------------------------------
# ids -> indices, duplicates
def check_policies(duplicates: str, unknown: str) -> None:
    """Refuse a ``duplicates=`` or ``unknown=`` policy that is not one of the known ones."""
    if duplicates not in DUPLICATE_POLICIES:
        raise DataError(f"duplicates must be one of {DUPLICATE_POLICIES}, not {duplicates!r}")
    if unknown not in ("error", "drop"):
        raise DataError(f"unknown must be 'error' or 'drop', not {unknown!r}")


def map_ids(ids: np.ndarray, vocab: Vocabulary, cols: Columns, name: str,
            unknown: UnknownPolicy) -> np.ndarray:
    """Indices of ``ids`` in ``vocab``: -1 for an unknown id with ``unknown="drop"``, an
    error naming its line or row with ``"error"``."""
    idx = vocab.index(ids)
    if unknown == "error" and (idx < 0).any():
        i = int(np.flatnonzero(idx < 0)[0])
        n_bad = int((idx < 0).sum())
        raise DataError(f"{name} {shown(ids[i])} is not in the {name} vocabulary "
                        f"({n_bad} events with unknown {name}s; pass unknown='drop' to skip them)",
                        **cols.locate(i))
    return idx


def index_columns(cols: Columns, users: Vocabulary | None, items: Vocabulary | None,
                  unknown: UnknownPolicy, duplicates: DuplicatePolicy) -> IndexedEvents:
    """Map validated columns to indices (vocabularies built from the sorted distinct ids
    when not given) and apply the duplicate policy."""
    check_policies(duplicates, unknown)
    if len(cols.user) == 0:
        raise DataError("no interactions (the data has no rows)", source=cols.source)
    if users is None:
        users, u = Vocabulary.from_values(cols.user)
    else:
        u = map_ids(cols.user, users, cols, "user", unknown)
    if items is None:
        items, i = Vocabulary.from_values(cols.item)
    else:
        i = map_ids(cols.item, items, cols, "item", unknown)
    keep = (u >= 0) & (i >= 0)
    value, timestamp, where = cols.value, cols.timestamp, cols.where
    session = session_codes(cols.session)
    if not keep.all():
        u, i, where = u[keep], i[keep], where[keep]
        value = None if value is None else value[keep]
        timestamp = None if timestamp is None else timestamp[keep]
        session = None if session is None else session[keep]
    return resolve_duplicates(u.astype(np.int32), i.astype(np.int32), value, timestamp, where,
                              users, items, cols.source, cols.unit, duplicates, session)


def resolve_duplicates(u: np.ndarray, i: np.ndarray, value: np.ndarray | None,
                       timestamp: np.ndarray | None, where: np.ndarray | None,
                       users: Vocabulary, items: Vocabulary, source: str | None, unit: str,
                       duplicates: DuplicatePolicy,
                       session: np.ndarray | None = None) -> IndexedEvents:
    """Check or resolve repeated (user, item) pairs of index arrays.

    ``where`` holds each event's line or row number; ``None`` means row ``index + 1``.
    """
    def at(j: int) -> int:
        return int(where[j]) if where is not None else j + 1

    key = u.astype(np.int64) * len(items) + i
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup_next = sorted_key[1:] == sorted_key[:-1]
    del sorted_key
    if dup_next.any():
        if duplicates == "error":
            j = int(np.flatnonzero(dup_next)[0])
            first, second = order[j], order[j + 1]
            raise DataError(
                f"duplicate (user, item) pair ({shown(users.ids[u[second]])}, "
                f"{shown(items.ids[i[second]])}), first seen at {unit} {at(first)}; choose a "
                "policy for repeated pairs (duplicates=, --duplicates): last (re-ratings), sum "
                "(counts), first, max or mean",
                source=source, **{unit: at(second)})
        u, i, value, timestamp, session = dedupe(u, i, value, timestamp, key, duplicates,
                                                 session)
    del key, order, dup_next
    return IndexedEvents(u, i, value, timestamp, users, items, source, session)


def dedupe(u: np.ndarray, i: np.ndarray, value: np.ndarray | None,
           timestamp: np.ndarray | None, key: np.ndarray, policy: str,
           session: np.ndarray | None = None,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                      np.ndarray | None]:
    """One event per distinct ``key`` (the (user, item) pair), by ``policy``.

    ``"first"`` / ``"last"`` keep the earliest / latest event (by timestamp when present,
    else by position); ``"sum"``, ``"max"``, ``"mean"`` aggregate the values (implicit events
    count 1 each under ``"sum"``) and keep the latest timestamp (and the session of the
    last event by position). Returns ``(user, item, value, timestamp, session)``: a kept
    event (``"first"``, ``"last"``) stays at its own input position, an aggregated one at
    its pair's first appearance, so the input order of what is kept is unchanged.
    """
    df = pd.DataFrame({"key": key, "u": u, "i": i})
    if value is not None:
        df["v"] = value
    if timestamp is not None:
        df["t"] = timestamp
    if session is not None:
        df["s"] = session
    if policy in ("first", "last"):
        by = ["key", "t"] if timestamp is not None else ["key"]
        df = df.sort_values(by, kind="stable")
        df = df.drop_duplicates("key", keep=policy)
        df = df.sort_index()
    else:
        agg: dict[str, Any] = {"u": "first", "i": "first"}
        if value is not None:
            agg["v"] = policy
        if timestamp is not None:
            agg["t"] = "max"
        if session is not None:
            agg["s"] = "last"
        if value is None and policy == "sum":
            df["v"] = np.float32(1)
            agg["v"] = "sum"
        df = df.groupby("key", sort=False).agg(agg)
    return (df["u"].to_numpy(np.int32), df["i"].to_numpy(np.int32),
            df["v"].to_numpy(np.float32) if "v" in df else None,
            df["t"].to_numpy(np.int64) if "t" in df else None,
            df["s"].to_numpy(np.int64) if "s" in df else None)


def events_from_frame(frame: pd.DataFrame, *, columns: Mapping[str, str] | None = None,
                      users: Vocabulary | None = None, items: Vocabulary | None = None,
                      unknown: UnknownPolicy = "error", duplicates: DuplicatePolicy = "error",
                      source: str | None = None, line_numbers: Sequence[int] | None = None,
                      unit: str = "row") -> IndexedEvents:
    """Validate a DataFrame of events and map its ids; see ``Interactions.from_frame``.

    ``line_numbers`` (each row's line in a file) makes messages name lines, not rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", source=source)
    if line_numbers is not None:
        unit = "line"
    where = None if line_numbers is None else np.asarray(line_numbers)
    cols = extract_columns(frame, columns, source, where, unit)
    return index_columns(cols, users, items, unknown, duplicates)
