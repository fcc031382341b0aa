"""What the commands share: the consoles, reading ``-p`` values and user lists, writing
tables, the checks of arguments and paths done before any work (and before torch or pandas
is imported, so that a mistake is answered at once), and the lists of models that help
texts and errors name (generated from the registry, never written out)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from recforge._fs import atomic_path, check_output_dir, check_output_file, is_stdout
from recforge.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Columns of output that is not a terminal (a pipe, a file) when ``COLUMNS`` does not say:
#: wide, so that help and tables are not cut at Rich's and Click's default of 80.
PIPE_WIDTH = 160


def output_width(stream: Any) -> int | None:
    """The width to lay out text for ``stream``: ``None`` (the terminal's own) for a
    terminal, else ``COLUMNS`` when set, else :data:`PIPE_WIDTH`."""
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


console = Console(stderr=False, width=output_width(sys.stdout))
err_console = Console(stderr=True, width=output_width(sys.stderr))
log = logging.getLogger("recforge")

#: ``{models_with:CAPABILITY}`` in a command's help: the models that declare it.
_MODEL_LIST = re.compile(r"\{models_with:(\w+)\}")


#: Options that several commands read data files with (one declaration each).
HEADER_OPTION = typer.Option(
    None, "--header/--no-header", help="Whether text files start with a line of column "
    "names (default: guessed from the first lines).")
ENCODING_OPTION = typer.Option("utf-8", "--encoding", help="Text encoding of delimited "
                               "files, e.g. latin-1.")


def models_with(capability: str, *, last: str = " and ") -> str:
    """The models that declare ``capability``, as text: ``"mf, bpr and gmf"``."""
    from recforge.models import registry  # lazy: reading capabilities imports torch

    names = registry.models_with(capability)
    return ", ".join(names[:-1]) + last + names[-1] if len(names) > 1 else "".join(names)


class ModelListHelp(TyperCommand):
    """A command whose help names models by capability (``{models_with:gradient}``),
    filled in when that help is shown: ``recforge --help`` shows only the help's first
    paragraph and imports no model."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.help:
            self.help = _MODEL_LIST.sub(lambda m: models_with(m.group(1), last=", "),
                                        self.help)
        super().format_help(ctx, formatter)


class ParamsCommand(ModelListHelp):
    """A command with ``-p/--param key=value`` options: ``-p alpha 10`` (a space for the
    ``=``) is answered with the form to use, not Click's "unexpected extra argument"
    (checked before Click parses: the ``10`` would be an extra argument, or the model)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        bad = next((v for v in param_values(args) if "=" not in v), None)
        if bad is not None:
            raise ConfigError(param_form_message(bad, args))
        return super().parse_args(ctx, args)


def param_values(argv: list[str]) -> list[str]:
    """The values given to ``-p`` / ``--param`` in ``argv`` (``-p X``, ``-pX``,
    ``--param X``, ``--param=X``)."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("-p", "--param"):
            if i + 1 < len(argv):
                values.append(argv[i + 1])
        elif arg.startswith("--param="):
            values.append(arg[len("--param="):])
        elif arg.startswith("-p") and not arg.startswith("--") and len(arg) > 2:
            values.append(arg[2:])
    return values


def param_form_message(item: str, argv: list[str] | None = None) -> str:
    """The error for a ``--param`` without ``=``, with the form to use: the argument that
    followed it in ``argv`` as the value (``-p alpha 10`` -> ``-p alpha=10``)."""
    argv = argv or []
    value = "VALUE"
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-p", "--param") and argv[i + 1] == item:
            after = argv[i + 2] if i + 2 < len(argv) else None
            if after is not None and not after.startswith("-"):
                value = after
            break
    key = item.strip() or "KEY"
    return (f"--param {item!r}: use key=value, e.g. -p {key}={value} "
            f"(one -p per hyperparameter)")


def parse_params(items: list[str] | None, argv: list[str] | None = None) -> dict[str, Any]:
    """``-p key=value`` options as a mapping; values read as YAML scalars (``10`` is a
    number, ``true`` a boolean). ``argv``: the command line, for the error of a ``-p``
    without ``=`` (``-p alpha 10``), which names the form to use."""
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(param_form_message(item, argv))
        key, _, raw = item.partition("=")
        from recforge.experiment.config import load_yaml  # lazy: imports torch

        try:  # bounded as an experiment file is: depth, aliases, huge integers
            value = load_yaml(raw, f"--param {key}") if raw.strip() else ""
        except ConfigError:
            value = raw  # as text, which the model's checks then judge
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text: a number here
            with contextlib.suppress(ValueError):
                value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf",
                                                                      "infinity") else value
        params[key.strip()] = value
    return params


def check_model_dir(path: Path) -> None:
    """A ``--model`` that does not exist, said before torch is imported to load it (the
    words of :func:`recforge.models.artifact.load`)."""
    if not os.path.lexists(path):
        raise ModelError(f"no such directory: {path} (a model is the directory "
                         "`recforge train --out` or model.save wrote)")


#: Suffixes of data files, which no dataset name (nor its aliases) ends with.
DATA_FILE_SUFFIXES = frozenset((".csv", ".tsv", ".txt", ".dat", ".data", ".parquet", ".pq",
                                ".json", ".jsonl", ".gz", ".zip"))


def check_data_specs(specs: Iterable[str]) -> None:
    """Data arguments that are neither a file nor a dataset name, said before the readers
    (pandas) and the workflow (torch) are imported (the words of
    :func:`recforge.data.datasets.load_dataset`)."""
    missing = [s for s in specs if not s.startswith("events:") and not os.path.lexists(s)
               and s != "synthetic"]
    files = [s for s in missing if Path(s).suffix.lower() in DATA_FILE_SUFFIXES]
    if files:  # a data file's name is no dataset name: said without reading the table
        raise DataError("no such file, and not a dataset name (try `recforge datasets list`)",
                        source=files[0])
    if not missing:
        return
    from recforge.data.movielens import get_spec  # lazy: imports pandas (dataset names)

    for spec in missing:
        try:
            get_spec(spec)
        except Exception:
            raise DataError("no such file, and not a dataset name (try `recforge datasets "
                            "list`)", source=spec) from None


#: Table formats of ``--format`` (the output's), and the file suffixes that choose them.
OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
_FORMAT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".tsv": "tsv", ".tab": "tsv",
                    ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

FORMAT_OPTION = typer.Option(
    None, "--format", help="Output table format: csv, tsv, jsonl (JSON lines) or parquet "
    "(default: from --out's suffix, else csv; csv for --out -).")


def output_format(out: Path, fmt: str | None) -> str:
    """The table format to write ``out`` in: ``fmt`` when given (checked), else the one
    ``out``'s suffix names, else CSV (also for ``-``, standard output)."""
    if fmt is not None:
        name = fmt.strip().lower()
        if name == "json":
            name = "jsonl"
        if name not in OUTPUT_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, "
                              f"not {fmt!r}")
        return name
    return _FORMAT_SUFFIXES.get(out.suffix.lower(), "csv")


def write_frame(frame: pd.DataFrame, out: Path, fmt: str | None = None) -> None:
    """Write ``frame`` to ``out`` in ``fmt`` (see :func:`output_format`): a regular file is
    replaced atomically; ``-``, ``/dev/stdout``, a FIFO or a device is written to."""
    name = output_format(out, fmt)
    with atomic_path(out) as tmp:
        if name == "parquet":
            frame.to_parquet(tmp, index=False)
        elif name == "jsonl":
            text = frame.to_json(orient="records", lines=True, force_ascii=False,
                                 double_precision=15) if len(frame) else ""
            tmp.write_text(text if not text or text.endswith("\n") else text + "\n",
                           encoding="utf-8")
        else:
            frame.to_csv(tmp, sep="\t" if name == "tsv" else ",", index=False)


def load_model(path: Path):
    check_model_dir(path)
    from recforge.models.base import Recommender  # lazy: imports torch

    return Recommender.load(path)


def read_id_file(path: Path, what: str = "user") -> np.ndarray:
    """Ids from a file: one per line (first field of a CSV / TSV), optional header."""
    import numpy as np  # lazy: not needed to check a command's arguments

    if not path.is_file():
        raise DataError("file not found", source=str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", source=str(path)) from None
    ids = [line.replace("\t", ",").split(",")[0].strip() for line in lines if line.strip()]
    if ids and ids[0].lower() in (what, f"{what}_id", f"{what}id", f"{what}s", "id"):
        ids = ids[1:]
    if not ids:
        raise DataError(f"no {what} ids in the file", source=str(path))
    return np.asarray(ids, dtype=object)


def read_user_list(path: Path) -> np.ndarray:
    """User ids from a file: one per line (first field of a CSV / TSV), optional header."""
    return read_id_file(path, "user")


def looks_like_path(value: str) -> bool:
    """Whether ``value`` reads as a file name rather than a list of ids: it has a path
    separator, or ends in a data file's suffix (``users.txt``)."""
    return ("/" in value or os.sep in value
            or Path(value).suffix.lower() in DATA_FILE_SUFFIXES)


def id_list_or_file(value: str, option: str, what: str = "user") -> np.ndarray:
    """The ids ``value`` names: the ids in the file ``value`` when it is an existing path,
    else ``value`` as comma-separated ids (``1,2,3``). A value that reads as a path
    (``users.txt``, ``data/u``) but is no file is an error, not an id."""
    import numpy as np  # lazy: not needed to check a command's arguments

    if os.path.lexists(value):
        return read_id_file(Path(value), what)
    if looks_like_path(value):
        raise DataError(f"{option}: no such file (a list of {what} ids is comma-separated, "
                        "e.g. 1,2,3)", source=value)
    ids = [x.strip() for x in value.split(",") if x.strip()]
    if not ids:
        raise ConfigError(f"{option}: no {what} ids in {value!r} (give 1,2,3 or a file)")
    return np.asarray(ids, dtype=object)


def as_model_ids(ids: np.ndarray, vocab: Any) -> np.ndarray:
    """Ids read as text (``"1"``) written as the model's own (``1``) where it knows them."""
    idx = vocab.index(ids)
    if (idx >= 0).all():
        return vocab.ids[idx]
    out = ids.copy()
    out[idx >= 0] = vocab.ids[idx[idx >= 0]]
    return out


def with_item_metadata(frame: pd.DataFrame, model: Any, column: str = "item") -> pd.DataFrame:
    """``frame`` with the display metadata the model keeps (title, genres, ...) of the
    items in ``column``, as columns after the others; one that would repeat a column
    name is prefixed ``item_``. ``frame`` as it is when the model keeps none."""
    meta = getattr(model, "item_metadata_", None)
    if meta is None or not len(frame):
        return frame
    cols = [c for c in meta.columns if c != "item"]
    pos = model.items_.index(frame[column].to_numpy(dtype=object))
    out = frame.copy()
    for c in cols:
        values = meta[c].to_numpy(dtype=object)[pos.clip(0)]
        values[pos < 0] = None
        out[f"item_{c}" if c in out.columns else c] = values
    return out


def metrics_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for c in columns:  # names fold onto the next line when narrow, never cut
        table.add_column(c, justify="left" if c in ("model", "metric") else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                        for c in columns])
    return table


def check_checkpoint_dir(ckpt: Path) -> None:
    check_out_dir(ckpt, "--checkpoint-dir")  # '-', a device or a FIFO is no directory
    if ckpt.exists() and not ckpt.is_dir():
        raise ConfigError(f"--checkpoint-dir {ckpt} exists and is not a directory")


def check_out_file(out: Path, option: str = "--out") -> None:
    """Refuse an output file path that cannot be one, before any work is done. ``-`` is
    standard output; a device or a FIFO is written to, a regular file replaced atomically
    (see :func:`recforge._fs.output_target`)."""
    try:
        check_output_file(out)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: {exc.strerror or exc}") from None


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse a directory output that cannot be one (``-``, a device, a FIFO, a file)."""
    try:
        check_output_dir(out)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: {exc.strerror or exc}") from None


def writes_stdout(out: Path | None) -> bool:
    """Whether the output ``out`` is this process's standard output: ``-``, or a path
    that opens the same file (``/dev/stdout``, ``/dev/fd/1``)."""
    if out is None:
        return False
    if is_stdout(out):
        return True
    try:
        return os.path.samestat(os.stat(out), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def status(out: Path | None) -> Console:
    """Where a command's messages go: standard error when its output is standard output
    (``-``, ``/dev/stdout``), so that the table is alone there."""
    return err_console if writes_stdout(out) else console

