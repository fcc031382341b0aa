"""Resolve a data SPEC (the CLI's ``--data``) into :class:`Interactions`.

A SPEC is a MovieLens name (``ml-100k``, ``ml-latest-small``...), ``synthetic``, or a path
to a CSV / TSV / Parquet / adjacency-list file. Several specs read together share one pair
of vocabularies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recforge.data.events import EventStore
from recforge.data.frames import DuplicatePolicy
from recforge.data.interactions import Interactions
from recforge.data.movielens import get_spec, load_movielens
from recforge.data.readers import read_interactions, read_many
from recforge.data.sharding import user_shard
from recforge.data.synthetic import make_synthetic
from recforge.errors import DataError

__all__ = ["is_dataset_name", "is_named_dataset", "load_dataset", "load_many"]


def is_named_dataset(spec: str) -> bool:
    """Whether ``spec`` names a built-in dataset rather than a file."""
    # a file of that name wins; a directory (an extracted copy of the dataset, say) does
    # not hide the name
    return not os.path.isfile(spec) and is_dataset_name(spec)


def is_dataset_name(spec: str) -> bool:
    """Whether ``spec`` is the name of a built-in dataset (whatever files exist)."""
    if spec == "synthetic":
        return True
    try:
        get_spec(spec)
        return True
    except Exception:
        return False


def _load_named(spec: str, data_dir: str | os.PathLike | None, download: bool) -> Any:
    if spec == "synthetic":
        return make_synthetic()
    return load_movielens(spec, data_dir=data_dir, download=download)


def load_dataset(spec: str | os.PathLike, *, format: str | None = None,
                 columns: Mapping[str, str] | str | None = None,
                 duplicates: DuplicatePolicy = "error", data_dir: str | os.PathLike | None = None,
                 download: bool = True, shard: tuple[int, int] | None = None,
                 header: bool | None = None, encoding: str = "utf-8") -> Interactions:
    """Interactions named by ``spec`` (a dataset name or a file path).

    ``shard=(rank, world_size)``: only the events of the users that rank owns
    (:mod:`recforge.data.sharding`; Parquet files are filtered while they stream).
    ``header`` and ``encoding`` apply to delimited text files
    (:func:`~recforge.data.readers.read_csv`).
    """
    spec_s = os.fspath(spec)
    if spec_s.startswith("events:"):  # the server's event store: a SQLite path or a URL
        # A store receives repeated posts by design: "error" (the default elsewhere) means
        # the server's own rule there, the latest event of a pair.
        with EventStore(spec_s[len("events:"):], create=False) as store:
            data = store.to_interactions(duplicates="last" if duplicates == "error"
                                         else duplicates)
    elif is_named_dataset(spec_s):
        data = _load_named(spec_s, data_dir, download).interactions
    elif not Path(spec_s).exists():
        raise DataError("no such file, and not a dataset name (try `recforge datasets list`)",
                        source=spec_s)
    else:
        return read_interactions(spec_s, format=format, columns=columns,
                                 duplicates=duplicates, shard=shard, header=header,
                                 encoding=encoding)
    return data if shard is None else user_shard(data, *shard)


def load_bundle(spec: str, *, data_dir: str | os.PathLike | None = None,
                download: bool = True) -> Any:
    """A named dataset with its metadata (``.interactions``, ``.items``, ``.users``)."""
    if not is_named_dataset(spec):
        raise DataError("not a dataset name (try `recforge datasets list`)", source=spec)
    return _load_named(spec, data_dir, download)


def load_many(specs: Sequence[str | os.PathLike], *, format: str | None = None,
              columns: Mapping[str, str] | str | None = None,
              duplicates: DuplicatePolicy = "error", data_dir: str | os.PathLike | None = None,
              download: bool = True, shard: tuple[int, int] | None = None,
              header: bool | None = None, encoding: str = "utf-8") -> list[Interactions]:
    """Several specs read into shared vocabularies (``train.txt`` + ``valid.txt``...)."""
    specs = [os.fspath(s) for s in specs]
    if len(specs) == 1:
        return [load_dataset(specs[0], format=format, columns=columns, duplicates=duplicates,
                             data_dir=data_dir, download=download, shard=shard, header=header,
                             encoding=encoding)]
    named = [s for s in specs if is_named_dataset(s)]
    if named:
        raise DataError(f"a dataset name ({named[0]!r}) cannot be combined with other inputs")
    return read_many(specs, format=format, columns=columns, duplicates=duplicates, shard=shard,
                     header=header, encoding=encoding)
