"""Item and user side features: multi-hot categories, TF-IDF text, binned numbers.

A :class:`Features` is a sparse ``[n_entities, n_features]`` matrix whose rows follow a
:class:`~recforge.data.vocabulary.Vocabulary` of entity ids (items or users), with a name
and a group for every column (``genres=Comedy`` in group ``genres``, ``title:star`` in group
``title``). Blocks are built by :func:`categorical`, :func:`text` and :func:`numeric`, and
joined with :func:`combine`, which scales every row of every block to unit length so that
each group weighs the same (times its weight) whatever its number of columns.

Builders for real data:

- :func:`from_frame` / :func:`read_features`: a user's own table (CSV / TSV / Parquet or a
  DataFrame) with an id column and named feature columns; column kinds are inferred (see
  :func:`infer_kinds`) or given.
- :func:`movielens_item_features` / :func:`movielens_user_features`: genres, title and tag
  text, year of a :class:`~recforge.data.movielens.MovieLensData`; age, gender and
  occupation of ml-100k / ml-1m users.

Item text (titles, tags, descriptions) is encoded by default with the text encoder that
ships inside the ``wordllama`` package (:mod:`recforge.data.text_encoders`: offline, no
model download) as a dense block (:func:`text_vectors`); ``text_encoder="tfidf"`` keeps
TF-IDF words (:func:`text`; scikit-learn's ``TfidfVectorizer``, a well-kept tokenizer, stop
words and smoothing rather than a home-grown one), and a directory names a
sentence-transformers model of one's own. Precomputed vectors of any modality (image,
audio, text) are read by :func:`recforge.data.vectors.item_vectors`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.text_encoders import (
    DEFAULT_TEXT_ENCODER,
    as_documents,
    decorrelate,
    encode_texts,
    wordllama_available,
)
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError

__all__ = ["Features", "categorical", "text", "numeric", "combine", "from_frame",
           "read_features", "infer_kinds", "movielens_item_features",
           "movielens_user_features", "text_embeddings", "text_vectors", "dense",
           "resolve_text_encoder"]

Kind = Literal["categorical", "text", "numeric", "vector"]


@dataclass(frozen=True, eq=False)
class Features:
    """A sparse feature matrix aligned with a vocabulary of entity ids.

    Attributes
    ----------
    ids: the entity ids, one per row.
    matrix: ``scipy.sparse.csr_matrix`` ``[len(ids), n_features]``, float32.
    names: feature names (``"genres=Comedy"``, ``"title:star"``, ``"year=[1990, 2000)"``).
    groups: the group (source column) of every feature.
    """

    ids: Vocabulary
    matrix: sp.csr_matrix
    names: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        m = sp.csr_matrix(self.matrix, dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "names", np.asarray(self.names, dtype=object))
        object.__setattr__(self, "groups", np.asarray(self.groups, dtype=object))
        if m.shape[0] != len(self.ids):
            raise DataError(f"feature matrix has {m.shape[0]} rows for {len(self.ids)} ids")
        if m.shape[1] != len(self.names) or len(self.names) != len(self.groups):
            raise DataError("feature names, groups and matrix columns differ in number")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    def __repr__(self) -> str:
        groups = ", ".join(f"{g}: {n}" for g, n in zip(*np.unique(self.groups,
                                                                    return_counts=True),
                                                        strict=True))
        return (f"Features({len(self.ids):,} entities x {self.n_features:,} features "
                f"[{groups}], {self.matrix.nnz:,} non-zeros)")

    def has_features(self) -> np.ndarray:
        """Boolean per row: does the entity have at least one non-zero feature?"""
        return np.diff(self.matrix.indptr) > 0

    def align(self, vocab: Vocabulary) -> Features:
        """Rows in the order of ``vocab``; ids of ``vocab`` without features get empty rows,
        feature rows of ids not in ``vocab`` are dropped."""
        if vocab == self.ids:
            return self
        src = self.ids.index(vocab.ids)
        ok = src >= 0
        rows = np.flatnonzero(ok)
        pick = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, src[ok])),
                             shape=(len(vocab), len(self.ids)))
        return Features(vocab, (pick @ self.matrix).tocsr(), self.names, self.groups)

    def union_ids(self, vocab: Vocabulary) -> Vocabulary:
        """``vocab`` followed by the ids that only these features know (in their order)."""
        extra = self.ids.ids[vocab.index(self.ids.ids) < 0]
        if len(extra) == 0:
            return vocab
        ids = np.concatenate([vocab.ids.astype(object), extra.astype(object)])
        if vocab.is_integer and self.ids.is_integer:
            ids = ids.astype(np.int64)
        return Vocabulary(ids)

    def select_groups(self, groups: Sequence[str]) -> Features:
        keep = np.flatnonzero(np.isin(self.groups, list(groups)))
        return Features(self.ids, self.matrix[:, keep], self.names[keep], self.groups[keep])

    def normalized(self, weights: Mapping[str, float] | None = None) -> sp.csr_matrix:
        """Rows scaled to unit length per group, times the group weight (default 1)."""
        return _normalize_blocks(self.matrix, self.groups, weights)

    def to_frame(self) -> pd.DataFrame:
        """Long format: ``id, feature, group, value`` per non-zero."""
        coo = self.matrix.tocoo()
        return pd.DataFrame({"id": self.ids.ids[coo.row], "feature": self.names[coo.col],
                             "group": self.groups[coo.col], "value": coo.data})

    # persistence helpers (models save their features with safetensors)
    def to_arrays(self) -> dict[str, np.ndarray]:
        m = self.matrix
        return {"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int32),
                "data": m.data.astype(np.float32)}

    @classmethod
    def from_arrays(cls, ids: Vocabulary, arrays: Mapping[str, Any], names: Sequence[str],
                    groups: Sequence[str]) -> Features:
        m = sp.csr_matrix((np.asarray(arrays["data"]), np.asarray(arrays["indices"]),
                           np.asarray(arrays["indptr"])), shape=(len(ids), len(names)))
        return cls(ids, m, np.asarray(names, dtype=object), np.asarray(groups, dtype=object))


def _normalize_blocks(matrix: sp.csr_matrix, groups: np.ndarray,
                      weights: Mapping[str, float] | None = None) -> sp.csr_matrix:
    m = matrix.tocsr().astype(np.float32)
    coo = m.tocoo()
    gid = pd.factorize(pd.Series(groups))[0][coo.col] if m.nnz else np.empty(0, np.int64)
    n_groups = len(set(groups))
    sq = np.zeros((m.shape[0], max(n_groups, 1)), np.float64)
    np.add.at(sq, (coo.row, gid), coo.data.astype(np.float64) ** 2)
    norm = np.sqrt(sq)[coo.row, gid]
    scale = np.ones(len(coo.data))
    if weights:
        unknown = set(weights) - set(groups)
        if unknown:
            raise ConfigError(f"feature weights for unknown groups {sorted(unknown)}; the "
                              f"groups are {sorted(set(groups))}")
        w = np.array([weights.get(g, 1.0) for g in groups], dtype=np.float64)
        scale = w[coo.col]
    data = np.where(norm > 0, coo.data / np.where(norm > 0, norm, 1.0), 0.0) * scale
    out = sp.csr_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=m.shape)
    out.eliminate_zeros()
    return out


def _ids(ids: Any, what: str) -> Vocabulary:
    vocab = ids if isinstance(ids, Vocabulary) else Vocabulary(np.asarray(ids))
    return vocab


def _check_len(ids: Vocabulary, values: Sequence[Any], name: str) -> None:
    if len(values) != len(ids):
        raise DataError(f"feature {name!r}: {len(values)} values for {len(ids)} ids")


def _as_lists(values: Any, sep: str | None) -> list[list[str]]:
    out: list[list[str]] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append([])
        elif isinstance(v, (list, tuple, np.ndarray, set)):
            out.append([str(x).strip() for x in v if str(x).strip()])
        else:
            s = str(v)
            parts = s.split(sep) if sep else [s]
            out.append([p.strip() for p in parts if p.strip()
                        and p.strip() != "(no genres listed)"])
    return out


def categorical(ids: Any, values: Sequence[Any], name: str, *, sep: str | None = "|",
                min_count: int = 1) -> Features:
    """Multi-hot block: each value (or each ``sep``-separated part, or each element of a
    list) is a feature ``name=value``; values seen on fewer than ``min_count`` entities are
    dropped."""
    vocab = _ids(ids, name)
    _check_len(vocab, values, name)
    lists = _as_lists(values, sep)
    rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    flat = [x for lst in lists for x in lst]
    if not flat:
        return Features(vocab, sp.csr_matrix((len(vocab), 0), dtype=np.float32), [], [])
    codes, uniques = pd.factorize(pd.Series(flat, dtype=object), sort=True)
    m = sp.csr_matrix((np.ones(len(codes), np.float32), (rows, codes)),
                      shape=(len(vocab), len(uniques)))
    m.data[:] = 1.0  # a value listed twice is still one
    keep = np.flatnonzero(np.diff(m.tocsc().indptr) >= min_count)
    names = np.array([f"{name}={u}" for u in uniques], dtype=object)
    return Features(vocab, m[:, keep], names[keep], np.full(len(keep), name, dtype=object))


def text(ids: Any, texts: Sequence[Any], name: str, *, min_df: int = 2,
         max_features: int | None = 20000, stop_words: str | None = "english",
         ngram_range: tuple[int, int] = (1, 1)) -> Features:
    """TF-IDF block over words of ``texts`` (rows L2-normalized); features ``name:word``.

    Words in fewer than ``min_df`` texts are dropped (on a catalogue smaller than
    ``min_df`` the limit is relaxed to 1).
    """
    # lazy: scikit-learn takes about a second to import and only TF-IDF needs it
    from sklearn.feature_extraction.text import TfidfVectorizer

    vocab = _ids(ids, name)
    _check_len(vocab, texts, name)
    docs = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else
            (" ".join(map(str, t)) if isinstance(t, (list, tuple, np.ndarray)) else str(t))
            for t in texts]
    if not any(d.strip() for d in docs):
        return Features(vocab, sp.csr_matrix((len(vocab), 0), dtype=np.float32), [], [])
    vec = TfidfVectorizer(min_df=min(min_df, max(1, sum(bool(d.strip()) for d in docs) - 1)),
                          max_features=max_features, stop_words=stop_words,
                          ngram_range=ngram_range, dtype=np.float32, sublinear_tf=True)
    try:
        m = vec.fit_transform(docs)
    except ValueError:  # every word filtered out (stop words / min_df)
        return Features(vocab, sp.csr_matrix((len(vocab), 0), dtype=np.float32), [], [])
    words = vec.get_feature_names_out()
    return Features(vocab, m.tocsr(), np.array([f"{name}:{w}" for w in words], dtype=object),
                    np.full(len(words), name, dtype=object))


def numeric(ids: Any, values: Sequence[Any], name: str, *, bins: int | None = 10) -> Features:
    """A number as features: ``bins`` quantile bins one-hot (``name=[lo, hi)``; the
    default, so that nearby values share a feature), or with ``bins=None`` one z-scored
    column. Missing values get no feature."""
    vocab = _ids(ids, name)
    _check_len(vocab, values, name)
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(
        np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return Features(vocab, sp.csr_matrix((len(vocab), 0), dtype=np.float32), [], [])
    if bins is None:
        mu, sd = x[ok].mean(), x[ok].std() or 1.0
        data = ((x[ok] - mu) / sd).astype(np.float32)
        m = sp.csr_matrix((data, (np.flatnonzero(ok), np.zeros(ok.sum(), np.int64))),
                          shape=(len(vocab), 1))
        return Features(vocab, m, [name], [name])
    edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, int(bins) + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0], edges[0] + 1])
    code = np.clip(np.searchsorted(edges, x[ok], side="right") - 1, 0, len(edges) - 2)
    m = sp.csr_matrix((np.ones(ok.sum(), np.float32), (np.flatnonzero(ok), code)),
                      shape=(len(vocab), len(edges) - 1))
    def fmt(v: float) -> str:
        return f"{v:g}"

    names = [f"{name}=[{fmt(lo)}, {fmt(hi)})" for lo, hi in zip(edges[:-1], edges[1:],
                                                                  strict=True)]
    return Features(vocab, m, names, [name] * len(names))


def combine(*blocks: Features) -> Features:
    """Join blocks over the union of their ids (first block's order first)."""
    if not blocks:
        raise ConfigError("combine needs at least one feature block")
    vocab = blocks[0].ids
    for b in blocks[1:]:
        vocab = b.union_ids(vocab)
    aligned = [b.align(vocab) for b in blocks]
    names = np.concatenate([b.names for b in aligned]) if aligned else np.empty(0, object)
    if len(set(names)) != len(names):
        dup = pd.Series(names).loc[pd.Series(names).duplicated()].iloc[0]
        raise DataError(f"feature {dup!r} appears in two blocks; give the blocks other names")
    return Features(vocab, sp.hstack([b.matrix for b in aligned], format="csr"),
                    names, np.concatenate([b.groups for b in aligned]))


def dense(ids: Any, matrix: Any, name: str) -> Features:
    """A dense ``[len(ids), dim]`` matrix of vectors as a feature block named ``name``
    (features ``name:0`` ... ``name:dim-1``). Rows must be finite; an all-zero row means no
    vector for that entity."""
    vocab = _ids(ids, name)
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != len(vocab):
        raise DataError(f"vectors {name!r}: shape {m.shape} for {len(vocab)} ids; expected "
                        f"({len(vocab)}, dim)")
    bad = ~np.isfinite(m)
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        raise DataError(f"vectors {name!r}: {m[row, col]} in dimension {col} of the vector "
                        f"of id {vocab.ids[row]!r} (row {row + 1})")
    names = [f"{name}:{j}" for j in range(m.shape[1])]
    return Features(vocab, sp.csr_matrix(m), names, [name] * len(names))


def resolve_text_encoder(encoder: str | os.PathLike | None) -> str | os.PathLike:
    """The encoder to use for item text: ``None`` means the default (``"wordllama"``);
    when the default is asked for and the ``wordllama`` package is missing, TF-IDF with a
    warning that says how to get the default back."""
    if encoder is None:
        encoder = DEFAULT_TEXT_ENCODER
    if str(encoder) == "wordllama" and not wordllama_available():
        warnings.warn("item text: the default encoder needs the wordllama package (a "
                      "dependency of recforge: pip install wordllama); using TF-IDF words "
                      "instead (pass text_encoder='tfidf' to silence this)", stacklevel=3)
        return "tfidf"
    return encoder


def text_vectors(ids: Any, texts: Sequence[Any], name: str, *,
                 encoder: str | os.PathLike = DEFAULT_TEXT_ENCODER,
                 drop_components: int | None = 1, batch_size: int = 256,
                 device: str | None = None) -> Features:
    """Dense vectors of ``texts`` as a feature block (``name:0`` ...).

    ``encoder``: ``"wordllama"`` (the default: bundled in the wordllama package, works
    offline) or a sentence-transformers model directory (the ``text`` extra). Vectors
    are centred over the catalogue with their top ``drop_components`` principal directions
    removed (see :func:`recforge.data.text_encoders.decorrelate`; ``None`` keeps the raw
    vectors). Empty texts get no features.
    """
    vocab = _ids(ids, name)
    _check_len(vocab, texts, name)
    emb = encode_texts(texts, encoder, batch_size=batch_size, device=device)
    if drop_components is not None:
        emb = decorrelate(emb, int(drop_components))
    return dense(vocab, emb, name)


def text_embeddings(ids: Any, texts: Sequence[Any], name: str, *, model: str | os.PathLike,
                    batch_size: int = 64, device: str | None = None) -> Features:
    """Dense, unit-length sentence embeddings of ``texts`` from a sentence-transformers
    model directory (the ``text`` extra) as a feature block (``name:0`` ...); see
    :func:`text_vectors` for the bundled default encoder."""
    if str(model) == "wordllama":
        return text_vectors(ids, texts, name, encoder="wordllama", drop_components=None,
                            batch_size=batch_size)
    path = Path(model)
    if not path.is_dir():
        raise ConfigError(f"text embeddings: no model directory at {str(path)!r}; recforge does "
                          "not download models at run time. Download a sentence-transformers "
                          "model where you have network access (e.g. `huggingface-cli download "
                          "sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR`) and pass "
                          "its directory as model=DIR")
    return text_vectors(ids, texts, name, encoder=path, drop_components=None,
                        batch_size=batch_size, device=device)


def _text_block(ids: Any, texts: Sequence[Any], name: str,
                encoder: str | os.PathLike, min_df: int = 2) -> Features:
    """A text column as TF-IDF words (``encoder="tfidf"``) or vectors (any other)."""
    if str(encoder) == "tfidf":
        return text(ids, texts, name, min_df=min_df)
    return text_vectors(ids, texts, name, encoder=encoder)


# ---------------------------------------------------------------------------------------
# a user's own table
def infer_kinds(frame: pd.DataFrame, columns: Sequence[str], sep: str = "|"
                ) -> dict[str, Kind]:
    """Guess each column's kind: numbers -> ``numeric``; lists of numbers (an embedding per
    row) -> ``vector``; other lists or ``sep``-separated values -> ``categorical``; strings of three or more words on average -> ``text``; other
    strings with few distinct values (at most 50 or 20% of rows) -> ``categorical``, the
    rest -> ``text``."""
    kinds: dict[str, Kind] = {}
    for col in columns:
        s = frame[col].dropna()
        if pd.api.types.is_bool_dtype(s):
            kinds[col] = "categorical"
        elif pd.api.types.is_numeric_dtype(s):
            kinds[col] = "numeric"
        elif len(s) and isinstance(s.iloc[0], (list, tuple, np.ndarray)):
            first = np.asarray(s.iloc[0])
            kinds[col] = ("vector" if first.size and first.dtype.kind in "fiu"
                          else "categorical")
        else:
            st = s.astype(str)
            if st.str.contains(sep, regex=False).any():
                kinds[col] = "categorical"
            elif len(st) and st.str.split().str.len().mean() >= 3:
                kinds[col] = "text"  # sentences
            elif st.nunique() <= max(50, 0.2 * len(st)):
                kinds[col] = "categorical"
            else:
                kinds[col] = "text"
    return kinds


def from_frame(frame: pd.DataFrame, id_column: str, *,
               kinds: Mapping[str, Kind] | None = None, columns: Sequence[str] | None = None,
               sep: str = "|", bins: int | None = 10, source: str | None = None,
               text_encoder: str | os.PathLike | None = None) -> Features:
    """Features from a table with one row per entity.

    ``columns`` (default: every column but the id) are turned into blocks by their kind
    (``kinds``; inferred by :func:`infer_kinds` when absent). Duplicate ids are an error.
    Text columns are encoded by ``text_encoder`` (default ``"wordllama"``, see
    :func:`text_vectors`; ``"tfidf"`` for TF-IDF words).
    """
    src = source or "<DataFrame>"
    if id_column not in frame.columns:
        raise DataError(f"no id column {id_column!r}; the columns are {list(frame.columns)}",
                        source=src, column=id_column)
    ids = frame[id_column]
    if ids.isna().any():  # rows are 1-based, as every reader names them
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError("missing id", source=src, row=row + 1, column=id_column)
    if ids.duplicated().any():
        row = int(np.flatnonzero(ids.duplicated().to_numpy())[0])
        value = ids.iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(f"id {value!r} appears twice", source=src, row=row + 1,
                        column=id_column)
    cols = list(columns) if columns is not None else [c for c in frame.columns
                                                      if c != id_column]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(f"no column {missing[0]!r}; the columns are {list(frame.columns)}",
                        source=src, column=missing[0])
    if not cols:
        raise DataError("the table has no feature columns besides the id", source=src)
    given = dict(kinds or {})
    bad = {k: v for k, v in given.items()
           if v not in ("categorical", "text", "numeric", "vector")}
    if bad:
        raise ConfigError(f"feature kinds must be categorical, text, numeric or vector: {bad}")
    kinds_all = {**infer_kinds(frame, [c for c in cols if c not in given], sep), **given}
    vocab = Vocabulary(ids.to_numpy())
    order = vocab.index(ids.to_numpy())
    encoder = (resolve_text_encoder(text_encoder) if "text" in kinds_all.values()
               else "tfidf")
    blocks = []
    for col in cols:
        values = frame[col].to_numpy(dtype=object)[np.argsort(order)]
        kind = kinds_all[col]
        if kind == "vector":
            blocks.append(_vector_column(vocab, values, str(col), src))
        elif kind == "numeric":
            blocks.append(numeric(vocab, values, str(col), bins=bins))
        elif kind == "text":
            blocks.append(_text_block(vocab, values, str(col), encoder))
        else:
            blocks.append(categorical(vocab, values, str(col), sep=sep))
    return combine(*blocks)


def _vector_column(vocab: Vocabulary, values: np.ndarray, name: str, source: str
                   ) -> Features:
    """A column holding one numeric vector per row (an embedding) as a dense block; rows
    without a vector get none. Differing lengths and non-finite numbers are errors."""
    lengths = np.array([-1 if v is None or (isinstance(v, float) and np.isnan(v))
                        else len(v) for v in values])
    present = np.flatnonzero(lengths >= 0)
    if len(present) == 0:
        return Features(vocab, sp.csr_matrix((len(vocab), 0), dtype=np.float32), [], [])
    dim = int(lengths[present[0]])
    odd = present[lengths[present] != dim]
    if len(odd) or dim == 0:
        row = int(odd[0]) if len(odd) else int(present[0])
        raise DataError(f"a vector of {lengths[row]} numbers where the first has {dim}",
                        source=source, column=name, row=row + 1)
    try:
        m = np.zeros((len(values), dim), np.float64)
        m[present] = np.stack([np.asarray(values[j], dtype=np.float64) for j in present])
    except (TypeError, ValueError):
        raise DataError("the vectors must hold numbers only", source=source,
                        column=name) from None
    bad = ~np.isfinite(m)
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        raise DataError(f"{m[row, col]} in dimension {col}", source=source,
                        column=name, row=row + 1)
    return dense(vocab, m, name)


def read_features(path: str | os.PathLike, id_column: str | None = None, *,
                  kinds: Mapping[str, Kind] | None = None,
                  columns: Sequence[str] | None = None, sep: str = "|",
                  bins: int | None = 10,
                  text_encoder: str | os.PathLike | None = None) -> Features:
    """Read an item (or user) table from CSV / TSV / Parquet and build :class:`Features`.

    ``id_column`` defaults to ``item`` (or ``user``, ``id``, the first column, in that
    order of preference). ``text_encoder`` as for :func:`from_frame`. A column of
    numeric lists (an embedding per row, e.g. CLIP image vectors) is a dense ``vector``
    block named after the column (``.npy`` vectors: :func:`recforge.data.vectors.item_vectors`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("feature file not found", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix in (".tsv", ".tab") else ",",
                                keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read feature table: {exc}", source=str(path)) from None
    if frame.empty:
        raise DataError("the feature table is empty", source=str(path))
    if id_column is None:
        id_column = next((c for c in ("item", "user", "id") if c in frame.columns),
                         frame.columns[0])
    return from_frame(frame, id_column, kinds=kinds, columns=columns, sep=sep, bins=bins,
                      source=str(path), text_encoder=text_encoder)


# ---------------------------------------------------------------------------------------
# MovieLens
def movielens_item_features(data: Any, *, genres: bool = True, title: bool = True,
                            year: bool = True, tags: bool = True,
                            text_encoder: str | os.PathLike | None = None,
                            words: bool = False) -> Features:
    """Item features of a :class:`~recforge.data.movielens.MovieLensData`: genres
    (multi-hot), release year (decade bins) and text.

    With a vector encoder (the default, ``"wordllama"``, or a sentence-transformers
    directory) the text is one group ``text``: the vector of each film's title (without
    its year), genre words and, where the variant has them, users' tags, as one document.
    With ``text_encoder="tfidf"`` it is TF-IDF words in two groups, ``title`` and ``tags``.
    ``words=True`` gives both: the vector group and the two TF-IDF groups (what ``hybrid``
    maps best to its factors, see docs/content.md).
    """
    items = data.items
    vocab = Vocabulary(items.index.to_numpy())
    encoder = resolve_text_encoder(text_encoder) if (title or tags) else "tfidf"
    blocks = []
    if genres:
        blocks.append(categorical(vocab, items["genres"].to_numpy(), "genres"))
    joined = None
    if tags and getattr(data, "tags", None) is not None and len(data.tags):
        t = data.tags
        joined = t.assign(tag=t["tag"].astype(str)).groupby("item")["tag"].agg(" ".join)
        joined = joined.reindex(items.index)
    words = words or str(encoder) == "tfidf"
    if words and title:
        blocks.append(text(vocab, items["title"].to_numpy(), "title"))
    if str(encoder) != "tfidf" and (title or joined is not None):
        parts = []
        if title:  # "Heat (1995)": the year has its own group
            parts.append(pd.Series(as_documents(items["title"].to_numpy(object)))
                         .str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True))
        parts.append(pd.Series(as_documents(items["genres"].to_numpy(object)))
                     .str.replace("(no genres listed)", "", regex=False)
                     .str.replace("|", " ", regex=False))
        if joined is not None:
            parts.append(pd.Series(as_documents(joined.to_numpy(object))))
        docs = [". ".join(p for p in row if p.strip()) for row in zip(*parts, strict=True)]
        blocks.append(text_vectors(vocab, docs, "text", encoder=encoder))
    if year:
        y = pd.to_numeric(items["year"], errors="coerce").to_numpy(np.float64)
        decade = np.where(np.isfinite(y), (np.floor(y / 10) * 10), np.nan)
        labels = [None if not np.isfinite(d) else f"{int(d)}s" for d in decade]
        blocks.append(categorical(vocab, labels, "year", sep=None))
    if joined is not None and words:
        blocks.append(text(vocab, joined.to_numpy(dtype=object), "tags", min_df=2))
    if not blocks:
        raise ConfigError("choose at least one MovieLens feature group")
    return combine(*blocks)


def movielens_user_features(data: Any) -> Features | None:
    """User features of ml-100k / ml-1m (age in bins, gender, occupation); ``None`` for
    variants without user profiles."""
    users = getattr(data, "users", None)
    if users is None or not len(users):
        return None
    vocab = Vocabulary(users.index.to_numpy())
    blocks = []
    if "age" in users.columns:
        blocks.append(numeric(vocab, users["age"].to_numpy(), "age", bins=6))
    for col in ("gender", "occupation"):
        if col in users.columns:
            blocks.append(categorical(vocab, users[col].to_numpy(), col, sep=None))
    return combine(*blocks) if blocks else None
