"""The :class:`Recommender` base class: the one model API.

A model implements two things: ``_fit(train, valid)`` (learn state, attributes ending in
``_``) and ``_score(users)`` (a ``[batch, n_items]`` tensor of scores for a batch of
internal user indices). Everything else is written once, here:

* hyperparameters are the keyword arguments of ``__init__``; :meth:`get_params` and
  :meth:`clone` read them from the signature (scikit-learn's convention);
* :meth:`recommend` scores users in memory-bounded blocks, sets already-seen items to
  ``-inf`` and takes ``torch.topk``; it speaks external ids;
* :meth:`similar_items` uses ``_item_similarity`` (cosine of item embeddings by default);
* :meth:`save` / :meth:`load` write weights as safetensors and everything else as JSON /
  Parquet, atomically, with a format version and checksums; no pickle.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import inspect
import json
import logging
import math
import os
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge._fs import atomic_dir, read_dir_consistently
from recforge._json import json_safe
from recforge.data.interactions import Interactions
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError

log = logging.getLogger(__name__)

FORMAT_NAME = "recforge-model"
FORMAT_VERSION = 1
#: Scores held in memory at once during batched scoring (floats): bounds memory use.
SCORE_BLOCK_ELEMENTS = 1 << 24

UnknownUsers = Literal["error", "skip", "popular"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torch_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
              shape: tuple[int, int]) -> torch.Tensor:
    """A torch sparse CSR tensor (float32) from CSR arrays, without torch's beta warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.asarray(indptr, dtype=np.int64)),
            torch.from_numpy(np.asarray(indices, dtype=np.int64)),
            torch.from_numpy(np.asarray(data, dtype=np.float32)), size=shape,
            check_invariants=False)


def csr_to_torch(mat: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32), sharing no memory."""
    mat = mat.tocsr()
    return torch_csr(mat.indptr, mat.indices, mat.data, mat.shape)


def rows_to_dense(mat: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Dense float32 tensor of the given rows of a CSR matrix."""
    return torch.from_numpy(np.asarray(mat[rows].toarray(), dtype=np.float32))


def binarize(mat: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of ``mat`` with every stored value set to 1."""
    out = mat.copy()
    out.data = np.ones_like(out.data, dtype=np.float32)
    return out


def mask_rows(scores: torch.Tensor, mat: sp.csr_matrix, rows: np.ndarray,
              value: float = -math.inf) -> None:
    """Set ``scores[b, j] = value`` wherever ``mat[rows[b], j]`` is stored (in place)."""
    indptr = mat.indptr
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return
    r = np.repeat(np.arange(len(rows)), lengths)
    # Gather the column indices of all rows at once.
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    cols = mat.indices[np.arange(total) + offsets]
    scores[torch.from_numpy(r), torch.from_numpy(cols.astype(np.int64))] = value


class Recommender:
    """Base class of every recforge model. See the module docstring."""

    #: Registry name (``recforge train NAME``).
    name: ClassVar[str] = ""
    #: False when scores do not depend on the user (popularity).
    personalized: ClassVar[bool] = True
    #: True for models with a meaningful :meth:`predict` (rating prediction).
    predicts_ratings: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------
    # hyperparameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must take explicit keyword arguments")
            names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as currently set (copies: editing a dict
        of them does not edit the model)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._param_names()}

    def set_params(self, **params: Any) -> Recommender:
        valid = self._param_names()
        for key, val in params.items():
            if key not in valid:
                raise ConfigError(_unknown_param_message(type(self), key))
            setattr(self, key, val)
        return self

    def clone(self) -> Recommender:
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__)
                    .parameters.values() if p.name != "self"}
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ----------------------------------------------------------------------------------
    # fitting
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "items_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError(f"{type(self).__name__} is not fitted; call fit(train) first")

    def _validate_params(self) -> None:
        """Raise :class:`ConfigError` for bad hyperparameters (override in models)."""

    def _check_finite_params(self) -> None:
        """No hyperparameter is NaN or infinite (a NaN passes every ``<`` check and trains
        a model of NaN), nested ones (a blend's components) included."""
        def bad(value: Any) -> bool:
            if isinstance(value, dict):
                return any(bad(v) for v in value.values())
            if isinstance(value, (list, tuple)):
                return any(bad(v) for v in value)
            return (isinstance(value, (float, np.floating)) and not math.isfinite(value))

        for name, value in self.get_params().items():
            if bad(value):
                raise ConfigError(f"{self.name}: {name} must be a finite number, got "
                                  f"{_shown(value)}")

    def fit(self, train: Interactions, valid: Interactions | None = None) -> Recommender:
        """Learn from ``train`` (``valid`` is used by models that early-stop). Returns self."""
        if not isinstance(train, Interactions):
            raise DataError(f"fit expects Interactions, got {type(train).__name__}")
        if len(train) == 0:
            raise DataError("cannot fit on an empty training set", source=train.source)
        if valid is not None and (valid.users != train.users or valid.items != train.items):
            valid = valid.reindex(train.users, train.items, unknown="drop")
        self._check_finite_params()
        self._validate_params()
        # All or nothing: a fit that fails leaves the model as it was (unfitted, or with its
        # earlier fit), and a refit starts without what the last fit learned (item
        # metadata of the old catalogue included). Fitted attributes end with "_".
        before = dict(self.__dict__)
        for name in [n for n in self.__dict__ if n.endswith("_") and not n.startswith("_")]:
            del self.__dict__[name]
        try:
            self.users_: Vocabulary = train.users
            self.items_: Vocabulary = train.items
            #: The training events (users x items, values; ones for implicit data): the items
            #: excluded from recommendations and the history that item-based models read.
            self.seen_: sp.csr_matrix = train.csr
            #: Training users per item (distinct: a pair repeated in a log counts once).
            self.item_popularity_: np.ndarray = np.bincount(
                self.seen_.indices, minlength=len(train.items)).astype(np.float32)
            self.train_fingerprint_: str = train.fingerprint()
            self._fit(train, valid)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return self

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        raise NotImplementedError

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return len(self.users_)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items_)

    # ----------------------------------------------------------------------------------
    # scoring
    def _score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for internal user indices (override)."""
        raise NotImplementedError

    def score(self, users: Any, items: Any = None) -> torch.Tensor:
        """Scores for internal user indices; all items (``[B, n_items]``) or the given item
        indices (``[B, len(items)]``). Higher is better."""
        self._check_fitted()
        u = torch.as_tensor(np.asarray(users, dtype=np.int64)).reshape(-1)
        if len(u) and (int(u.min()) < 0 or int(u.max()) >= self.n_users):
            raise ModelError(f"user index out of range [0, {self.n_users})")
        with torch.no_grad():
            scores = self._score(u).float()
        if items is None:
            return scores
        it = torch.as_tensor(np.asarray(items, dtype=np.int64)).reshape(-1)
        if len(it) and (int(it.min()) < 0 or int(it.max()) >= self.n_items):
            raise ModelError(f"item index out of range [0, {self.n_items})")
        return scores[:, it]

    def _block_size(self, batch_size: int | None) -> int:
        if batch_size is not None:
            if batch_size < 1:
                raise ConfigError("batch_size must be >= 1")
            return batch_size
        return max(1, SCORE_BLOCK_ELEMENTS // max(1, self.n_items))

    def iter_top_k(self, users: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None,
                   candidates: np.ndarray | None = None, batch_size: int | None = None,
                   tie_rank: np.ndarray | None = None, tie_seed: int | None = None,
                   ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Top-``k`` item indices and scores for internal user indices, in blocks.

        Yields ``(user_block, item_idx [B, k], scores [B, k])``. Items stored in
        ``exclude[user]`` get ``-inf`` before the top-k (so they come last, with score
        ``-inf``, only when fewer than ``k`` items remain). ``candidates`` restricts the
        ranking to those item indices. Equal scores are taken and ordered by ``tie_rank``
        (each item's rank, lower first; ``recommend`` passes popularity ranks), or with
        ``tie_seed`` in a pseudo-random order of each (user, item) pair, the same however
        users are batched (the evaluation does: a model that scores many items alike gets
        what chance gives, not the lowest ids); with neither, as ``torch.topk`` leaves them.
        """
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        n_items = self.n_items
        cand_mask = None
        if candidates is not None:
            cand_mask = torch.ones(n_items, dtype=torch.bool)
            cand_mask[torch.as_tensor(np.asarray(candidates, dtype=np.int64))] = False
            k = min(k, n_items - int(cand_mask.sum()))
        k = min(k, n_items)
        rank = None
        if tie_rank is not None:
            rank = torch.as_tensor(np.asarray(tie_rank, dtype=np.int64))
            if rank.shape != (n_items,):
                raise ConfigError(f"tie_rank must give a rank to each of the {n_items} items")
        block = self._block_size(batch_size)
        for start in range(0, len(users), block):
            ub = users[start:start + block]
            scores = self.score(ub)
            if exclude is not None:
                mask_rows(scores, exclude, ub)
            if cand_mask is not None:
                scores[:, cand_mask] = -math.inf
            if rank is not None:
                yield ub, *_top_k_ties_in_order(scores, k, rank_ties(rank))
            elif tie_seed is not None:
                yield ub, *_top_k_ties_in_order(
                    scores, k, random_ties(torch.from_numpy(ub), n_items, tie_seed))
            else:
                top = torch.topk(scores, k, dim=1, sorted=True)
                yield ub, top.indices, top.values

    def _user_index(self, users: Any, unknown: UnknownUsers) -> tuple[np.ndarray, np.ndarray]:
        ext = np.atleast_1d(np.asarray(users, dtype=object if not isinstance(users, np.ndarray)
                                       else None))
        idx = self.users_.index(ext)
        bad = idx < 0
        if bad.any() and unknown == "error":
            shown = ", ".join(repr(x) for x in ext[bad][:5].tolist())
            raise ModelError(f"{int(bad.sum())} unknown user id(s): {shown}"
                             f"{' ...' if bad.sum() > 5 else ''}; pass unknown='skip' or "
                             "'popular' to skip them or recommend popular items")
        if unknown not in ("error", "skip", "popular"):
            raise ConfigError(f"unknown must be 'error', 'skip' or 'popular', not {unknown!r}")
        return ext, idx

    def recommend(self, users: Any, k: int = 10, *, include_seen: bool = False,
                  candidates: Any = None, unknown: UnknownUsers = "error",
                  batch_size: int | None = None) -> pd.DataFrame:
        """Top-``k`` recommendations for users given by their *external* ids.

        Returns a DataFrame with columns ``user, item, rank, score`` (external ids, rank
        from 1). Items the user interacted with in training are excluded unless
        ``include_seen=True``. ``candidates`` (external item ids) restricts the ranking.
        Unknown users raise :class:`ModelError` (``unknown="error"``), are left out
        (``"skip"``), or get the most popular unseen items (``"popular"``).
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        ext, idx = self._user_index(users, unknown)
        cand_idx = None
        if candidates is not None:
            cand_idx = self.items_.index(candidates)
            if (cand_idx < 0).any():
                bad = np.atleast_1d(np.asarray(candidates, dtype=object))[cand_idx < 0]
                raise ModelError(f"unknown candidate item id(s): {bad[:5].tolist()}")
        exclude = None if include_seen else self.seen_
        known = idx >= 0
        # Output ids in the vocabulary's own type (a CLI passes "42" for user 42).
        ext = ext.astype(object)
        ext[known] = self.users_.ids[idx[known]]
        frames = []
        pos = np.flatnonzero(known)
        fallback = unknown == "popular" and bool((~known).any())
        # equal scores (a short history, a cold item) are ordered by popularity
        for ub, items, scores in self.iter_top_k(idx[known], int(k), exclude=exclude,
                                                 candidates=cand_idx, batch_size=batch_size,
                                                 tie_rank=self._popularity_rank()):
            frames.append(self._frame(ext[pos[:len(ub)]], items, scores,
                                      pos[:len(ub)] if fallback else None))
            pos = pos[len(ub):]
        if fallback:
            frames.append(self._popular_frame(ext[~known], int(k), cand_idx,
                                              np.flatnonzero(~known)))
        if not frames:
            return pd.DataFrame({"user": pd.Series([], dtype=object),
                                 "item": pd.Series([], dtype=object),
                                 "rank": pd.Series([], dtype=np.int64),
                                 "score": pd.Series([], dtype=np.float32)})
        out = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if fallback:  # back in the order the users came in
            out = out.iloc[np.argsort(out["_pos"].to_numpy(), kind="stable")]
            out = out.drop(columns="_pos").reset_index(drop=True)
        return out

    def _popularity_order(self) -> np.ndarray:
        """Item indices from the most to the least popular (ties: by index); computed once
        per fit (a fitted attribute, so a refit drops it)."""
        order = getattr(self, "popularity_order_", None)
        if order is None or len(order) != len(self.item_popularity_):
            order = np.argsort(-self.item_popularity_, kind="stable")
            self.popularity_order_ = order
        return order

    def _popularity_rank(self) -> np.ndarray:
        """Each item's place in :meth:`_popularity_order` (0: the most popular)."""
        rank = getattr(self, "popularity_rank_", None)
        if rank is None or len(rank) != len(self.item_popularity_):
            rank = np.empty(len(self.item_popularity_), dtype=np.int64)
            rank[self._popularity_order()] = np.arange(len(rank))
            self.popularity_rank_ = rank
        return rank

    # ----------------------------------------------------------------------------------
    # users the model never saw
    #: Whether :meth:`recommend_for_history` works (the model overrides ``_score_history``).
    supports_history: ClassVar[bool] = False

    def recommend_for_history(self, items: Any, k: int = 10, *, values: Any = None,
                              exclude_history: bool = True, candidates: Any = None,
                              unknown: Literal["error", "skip"] = "error") -> pd.DataFrame:
        """Top-``k`` items for a user the model never saw, from a list of item ids (a
        session, an anonymous cart, a new sign-up's first ratings).

        ``values`` gives a rating or weight per item (default: 1 each, or for rating models
        the top of the training rating range). Returns columns ``item, rank, score``; the
        history's own items are left out unless ``exclude_history=False``. Item ids the
        model does not know raise :class:`ModelError` (``unknown="error"``) or are left
        out (``"skip"``) and listed in ``frame.attrs["unknown_items"]``, never dropped
        silently.
        """
        self._check_fitted()
        if not self.supports_history:
            supported = ", ".join(sorted(_history_models()))
            raise ModelError(f"{self.name!r} cannot score a history it was not trained on; "
                             f"models that can: {supported}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if unknown not in ("error", "skip"):
            raise ConfigError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        ext = np.atleast_1d(np.asarray(items, dtype=object if not isinstance(items, np.ndarray)
                                       else None))
        vals = (None if values is None
                else np.atleast_1d(np.asarray(values, dtype=np.float32)).ravel())
        if vals is not None and len(vals) != len(ext):
            raise ConfigError(f"{len(vals)} values for {len(ext)} items")
        if vals is not None and not np.isfinite(vals).all():
            raise DataError("history values must be finite numbers")
        idx = self.items_.index(ext) if len(ext) else np.empty(0, np.int64)
        bad = ext[idx < 0]
        if len(bad) and unknown == "error":
            raise ModelError(f"{len(bad)} item id(s) unknown to the model: {bad[:10].tolist()}"
                             " (pass unknown='skip' to leave them out)")
        keep = idx >= 0
        idx = idx[keep].astype(np.int64)
        vals = vals[keep] if vals is not None else None
        if not len(idx):
            raise ModelError("none of the history's items is known to the model"
                             + (f": {bad[:10].tolist()}" if len(bad) else " (empty history)"))
        if len(idx):  # one entry per item: a repeated item keeps its last value
            _, last = np.unique(idx[::-1], return_index=True)
            pick = np.sort(len(idx) - 1 - last)
            idx = idx[pick]
            vals = vals[pick] if vals is not None else None
        with torch.no_grad():
            scores = self._score_history(idx, vals).float().reshape(1, -1).clone()
        if exclude_history and len(idx):
            scores[0, torch.from_numpy(idx)] = -math.inf
        if candidates is not None:
            cand = self.items_.index(candidates)
            if (cand < 0).any():
                badc = np.atleast_1d(np.asarray(candidates, dtype=object))[cand < 0]
                raise ModelError(f"unknown candidate item id(s): {badc[:5].tolist()}")
            mask = torch.ones(scores.shape[1], dtype=torch.bool)
            mask[torch.from_numpy(cand)] = False
            scores[0, mask] = -math.inf
        ties = rank_ties(torch.from_numpy(self._popularity_rank()))  # as recommend has them
        pos, vals = _top_k_ties_in_order(scores, min(int(k), scores.shape[1]), ties)
        frame = self._frame(np.zeros(1, dtype=object), pos, vals).drop(columns="user")
        frame.attrs["unknown_items"] = bad.tolist()
        return frame

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Scores ``[n_items]`` for an unseen user with these item indices (override and
        set ``supports_history = True``)."""
        raise NotImplementedError

    def _history_row(self, items: np.ndarray, values: np.ndarray | None,
                     binary: bool = True) -> sp.csr_matrix:
        """The history as a ``1 x n_items`` CSR row (ones when ``binary`` or no values)."""
        data = (np.ones(len(items), np.float32) if binary or values is None
                else values.astype(np.float32))
        return sp.csr_matrix((data, (np.zeros(len(items), np.int64), items)),
                             shape=(1, self.n_items))

    def _frame(self, ext_users: np.ndarray, items: torch.Tensor, scores: torch.Tensor,
               positions: np.ndarray | None = None) -> pd.DataFrame:
        """Rows ``user, item, rank, score`` (and ``_pos``, each row's user's position in
        the request, when ``positions`` is given); slots with a non-finite score are left
        out."""
        b, k = items.shape
        it = items.cpu().numpy().ravel()
        sc = scores.cpu().numpy().ravel()
        keep = np.isfinite(sc)
        frame = pd.DataFrame({
            "user": np.repeat(ext_users, k)[keep],
            "item": self.items_.ids[it[keep]],
            "rank": np.tile(np.arange(1, k + 1), b)[keep],
            "score": sc[keep],
        })
        if positions is not None:
            frame["_pos"] = np.repeat(positions, k)[keep]
        return frame

    def _popular_frame(self, ext_users: np.ndarray, k: int, cand_idx: np.ndarray | None,
                       positions: np.ndarray | None = None) -> pd.DataFrame:
        order = self._popularity_order()  # the most popular first, ties by index
        if cand_idx is not None:
            order = order[np.isin(order, cand_idx)]
        top = torch.from_numpy(order[:k].copy())
        vals = torch.from_numpy(self.item_popularity_[order[:k]].copy())
        n = len(ext_users)
        return self._frame(ext_users, top.repeat(n, 1), vals.repeat(n, 1), positions)

    # ----------------------------------------------------------------------------------
    # item-item
    def _item_embeddings(self) -> torch.Tensor | None:
        """Item vectors for cosine :meth:`similar_items` (override in factor models)."""
        return None

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        """Similarities ``[len(items), n_items]`` (default: cosine of item embeddings)."""
        emb = self._item_embeddings()
        if emb is None:
            raise ModelError(f"{type(self).__name__} does not support similar_items")
        emb = torch.nn.functional.normalize(emb.float(), dim=1)
        return emb[items] @ emb.T

    def similar_items(self, items: Any, k: int = 10, *, batch_size: int | None = None
                      ) -> pd.DataFrame:
        """The ``k`` items most similar to each given item (external ids).

        Returns columns ``item, similar, rank, score``; an item is never its own neighbour.
        Items with no similarity at all (a score of exactly 0: no user or feature in common,
        as item-kNN and content models say) are left out, so fewer than ``k`` rows may come
        back for an item. Unknown item ids raise :class:`ModelError`.
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        ext = np.atleast_1d(np.asarray(items, dtype=object if not isinstance(items, np.ndarray)
                                       else None))
        if len(ext) == 0:
            return pd.DataFrame({"item": pd.Series([], dtype=object),
                                 "similar": pd.Series([], dtype=object),
                                 "rank": pd.Series([], dtype=np.int64),
                                 "score": pd.Series([], dtype=np.float32)})
        idx = self.items_.index(ext)
        if (idx < 0).any():
            raise ModelError(f"unknown item id(s): {ext[idx < 0][:5].tolist()}")
        ext = self.items_.ids[idx].astype(object)  # the vocabulary's own type ("1" -> 1)
        k = min(int(k), self.n_items - 1)
        block = self._block_size(batch_size)
        ties = rank_ties(torch.from_numpy(self._popularity_rank()))  # equal: the popular first
        frames = []
        for start in range(0, len(idx), block):
            ib = torch.from_numpy(idx[start:start + block])
            with torch.no_grad():
                sims = self._item_similarity(ib).float().clone()
            sims[torch.arange(len(ib)), ib] = -math.inf
            sims[sims == 0] = -math.inf
            pos, vals = _top_k_ties_in_order(sims, k, ties)
            f = self._frame(ext[start:start + block], pos, vals)
            frames.append(f.rename(columns={"user": "item", "item": "similar"}))
        return pd.concat(frames, ignore_index=True)

    # ----------------------------------------------------------------------------------
    # rating prediction
    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for (user, item) pairs of external ids (rating models only).

        Pairs with an unknown user or item get NaN.
        """
        self._check_fitted()
        if not self.predicts_ratings:
            self._predict_index(np.empty(0, np.int64), np.empty(0, np.int64))
        u = self.users_.index(np.atleast_1d(np.asarray(users, dtype=object)))
        i = self.items_.index(np.atleast_1d(np.asarray(items, dtype=object)))
        if u.shape != i.shape:
            raise ConfigError("users and items must have the same length")
        out = np.full(len(u), np.nan, dtype=np.float32)
        ok = (u >= 0) & (i >= 0)
        if ok.any():
            out[ok] = self._predict_index(u[ok], i[ok])
        return out

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for internal index pairs (override in rating models)."""
        raise ModelError(f"{type(self).__name__} ({self.name!r}) ranks items but does not "
                         "predict ratings; use a rating model such as 'mf'")

    def dot_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(user_vectors, item_vectors)`` when the model's scores are exactly their dot
        products (what an approximate nearest-neighbour index needs), else ``None``."""
        return None

    # ----------------------------------------------------------------------------------
    # item metadata (titles, genres) kept with the model for serving
    def attach_item_metadata(self, frame: pd.DataFrame) -> Recommender:
        """Keep display metadata (``title``, ``genres``, ...) of the model's items, saved
        with the model and shown by the server. ``frame`` is indexed by item id; rows are
        aligned with the model's items (missing ones empty)."""
        self._check_fitted()
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError("item metadata must be a DataFrame indexed by item id")
        src = Vocabulary(np.asarray(frame.index))
        pos = src.index(self.items_.ids)
        aligned = frame.iloc[np.where(pos >= 0, pos, 0)].reset_index(drop=True).astype(object)
        aligned.loc[pos < 0, :] = None
        aligned.insert(0, "item", self.items_.ids)
        self.item_metadata_ = aligned
        return self

    # ----------------------------------------------------------------------------------
    # persistence
    def _state(self) -> dict[str, torch.Tensor | np.ndarray]:
        """Learned arrays to save (override together with :meth:`_state_spec`)."""
        return {}

    def _extra(self) -> dict[str, Any]:
        """Learned JSON-able scalars to save (override)."""
        return {}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        """What :meth:`_state` saves, for :meth:`load` to check before :meth:`_restore`:
        name -> :class:`Array`, :class:`CSR` or :class:`Module`, in terms of
        ``n_users``, ``n_items``, the hyperparameters and ``extra`` (check what it reads
        with :func:`extra_value`). Called on the loaded model once its vocabularies,
        seen items and item popularity are restored and checked. Every saved array must
        be declared: an array the spec does not name is refused."""
        return {}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        """Set learned attributes from what :meth:`_state` / :meth:`_extra` saved, once
        :meth:`_state_spec` has checked it (``state`` holds the checked arrays, cast to the
        declared dtypes)."""

    #: The hyperparameters a loaded model reads when it scores (the others only train),
    #: with the rule each must pass: a doctored ``meta.json`` must not crash, hang or
    #: poison scoring. The rest are not checked on load, so that a model saved before a
    #: validation grew stricter still loads.
    scoring_params: ClassVar[dict[str, ParamRule]] = {}

    def _check_scoring_params(self, where: str) -> None:
        """Raise :class:`ModelError` naming ``where`` for a NaN or infinite
        hyperparameter or one that breaks its :attr:`scoring_params` rule."""
        try:
            self._check_finite_params()
        except ConfigError as exc:
            raise ModelError(f"{where}: {exc}") from None
        for name, rule in self.scoring_params.items():
            value = getattr(self, name, None)
            if not rule.ok(value):
                raise ModelError(f"{where}: parameter {name!r} must be {rule.text}, got "
                                 f"{_shown(value)}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to the directory ``path``, replacing an earlier saved
        model there atomically (see :func:`recforge._fs.atomic_dir`): a reader of ``path``
        finds the old model or the new one, complete, at every moment."""
        from safetensors.torch import save_file

        from recforge import __version__

        self._check_fitted()
        path = Path(path)
        check_model_target(path)
        tensors: dict[str, torch.Tensor] = {}
        for key, val in self._state().items():
            t = torch.as_tensor(val) if not isinstance(val, torch.Tensor) else val
            tensors[f"model.{key}"] = t.detach().cpu().contiguous()
        seen = self.seen_
        tensors["base.seen_indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
        tensors["base.seen_indices"] = torch.from_numpy(seen.indices.astype(np.int32))
        tensors["base.seen_data"] = torch.from_numpy(seen.data.astype(np.float32))
        tensors["base.item_popularity"] = torch.from_numpy(self.item_popularity_)
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / "weights.safetensors"))
            _write_vocab(tmp / "users.parquet", self.users_)
            _write_vocab(tmp / "items.parquet", self.items_)
            names = ["weights.safetensors", "users.parquet", "items.parquet"]
            meta_frame = getattr(self, "item_metadata_", None)
            if meta_frame is not None:
                _write_item_metadata(tmp / "item_metadata.parquet", meta_frame)
                names.append("item_metadata.parquet")
            files = {f: _sha256(tmp / f) for f in names}
            meta = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "recforge_version": __version__,
                "model": self.name,
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "params": json_safe(self.get_params()),
                "n_users": self.n_users,
                "n_items": self.n_items,
                "train_fingerprint": self.train_fingerprint_,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "extra": json_safe(self._extra()),
                "files": files,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        log.info("saved %s to %s", self.name, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Load a model saved by :meth:`save` (see :meth:`load_with_meta`)."""
        return cls.load_with_meta(path)[0]

    @classmethod
    def load_with_meta(cls, path: str | os.PathLike) -> tuple[Recommender, dict[str, Any]]:
        """Load a model saved by :meth:`save`, with the ``meta.json`` it was read from
        (one read: a second read of ``meta.json`` could meet the next save's).

        Checksums catch a damaged file; they prove nothing about who wrote it (whoever
        edits a weight file can edit ``meta.json`` too). So every array is checked
        against what the model declares (:meth:`_state_spec`: shapes in terms of the
        vocabularies and hyperparameters, dtypes, index ranges, sparse-matrix structure,
        finite values), and the vocabularies, item metadata, ``params`` and ``extra``
        likewise. Whatever is wrong raises :class:`ModelError` naming the file and the
        array or field, never a crash later at scoring time. The files are read through
        one handle of the directory, so a save that replaces the model meanwhile yields
        the old model or the new one, never a mix.
        """
        path = Path(path)
        try:
            return cls._load(path)
        except ModelError as exc:
            if str(path) in str(exc):
                raise
            raise ModelError(f"{path}: {exc}") from None  # "meta.json: extra.mean ..."
        except (ConfigError, DataError) as exc:
            raise ModelError(f"{path}: {exc}") from None
        except Exception as exc:  # a damaged directory must not surface as a traceback
            raise ModelError(f"{path}: cannot load the saved model "
                             f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def _load(cls, path: Path) -> tuple[Recommender, dict[str, Any]]:
        try:
            meta, blobs = read_dir_consistently(path, lambda reader: _read_artifact(path,
                                                                                  reader))
        except FileNotFoundError as exc:
            name = os.path.basename(os.fspath(exc.filename or ""))
            if os.fspath(exc.filename or "") == os.fspath(path):
                raise ModelError(f"{path}: no such model directory") from None
            if name == "meta.json":
                raise ModelError(f"{path}: not a saved recforge model (no meta.json)"
                                 ) from None
            raise ModelError(f"{path / name}: missing from the saved model") from None
        except NotADirectoryError:
            raise ModelError(f"{path}: not a directory (a model is saved as a directory)"
                             ) from None
        return cls._from_artifact(path, meta, blobs), meta

    @classmethod
    def _from_artifact(cls, path: Path, meta: dict[str, Any], blobs: dict[str, bytes]
                       ) -> Recommender:
        """The model from ``meta.json`` and the bytes of its files, every part checked."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_tensors

        from recforge.models.registry import get_model_class

        meta_path = path / "meta.json"
        try:
            model_cls = get_model_class(meta["model"])
        except ConfigError as exc:
            raise ModelError(f"{meta_path}: {exc}") from None
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ModelError(f"{path} holds a {meta['model']!r} model, not {cls.__name__}")
        model = _instantiate(model_cls, meta["params"], meta_path, path)
        model._check_scoring_params(f"{meta_path}: params")
        extra = meta.get("extra", {})
        if not isinstance(extra, dict):
            raise ModelError(f"{meta_path}: 'extra' must be a JSON object")
        fingerprint = meta.get("train_fingerprint", "")
        if not isinstance(fingerprint, str):
            raise ModelError(f"{meta_path}: 'train_fingerprint' must be a string")
        weights = path / "weights.safetensors"
        try:
            tensors = load_tensors(blobs["weights.safetensors"])
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{weights}: cannot read weights ({exc})") from None
        model.users_ = _read_vocab(path / "users.parquet", blobs["users.parquet"])
        model.items_ = _read_vocab(path / "items.parquet", blobs["items.parquet"])
        n_users, n_items = len(model.users_), len(model.items_)
        for key, n in (("n_users", n_users), ("n_items", n_items)):
            if key in meta and meta[key] != n:
                raise ModelError(f"{meta_path}: {key} is {_shown(meta[key])} but the "
                                 f"vocabulary file holds {n:,} ids")
        base = check_state({k[len("base."):]: v for k, v in tensors.items()
                            if k.startswith("base.")},
                           {"seen": CSR((n_users, n_items)),
                            "item_popularity": Array((n_items,), low=0)},
                           f"{weights}: base.")
        model.seen_ = sp.csr_matrix((base["seen_data"].numpy(), base["seen_indices"].numpy(),
                                     base["seen_indptr"].numpy()), shape=(n_users, n_items))
        model.item_popularity_ = base["item_popularity"].numpy().copy()
        model.train_fingerprint_ = fingerprint
        if "item_metadata.parquet" in blobs:
            model.item_metadata_ = _read_item_metadata(path / "item_metadata.parquet",
                                                       blobs["item_metadata.parquet"], n_items)
        stray = sorted(k for k in tensors if not k.startswith(("base.", "model.")))
        if stray:
            raise ModelError(f"{weights}: unexpected array(s) {stray[:5]}")
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        checked = check_state(state, model._state_spec(extra), f"{weights}: model.")
        model._restore(checked, extra)
        return model


#: ``key(rows, cols)``: the tie-break keys (smaller first) of those rows at those columns
#: (``[R, C]``), or at every column when ``cols`` is None (``[R, n]``).
TieKey = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def rank_ties(rank: torch.Tensor) -> TieKey:
    """Ties go to the item of lower ``rank`` (``rank[item]``; e.g. 0 for the most popular)."""
    n = len(rank)

    def key(rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        return rank.expand(len(rows), n) if cols is None else rank[cols]

    return key


def random_ties(row_ids: torch.Tensor, n_items: int, seed: int) -> TieKey:
    """Ties in a pseudo-random order of each (row id, item): a seeded permutation of the
    items, rotated by an offset drawn from the row id (a user), so that the same user and
    item always draw the same, however users are batched, and users draw apart."""
    n = max(n_items, 1)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).to(torch.int32)
    ids = row_ids.to(torch.int64)
    offset = ((ids * 0x9E3779B1 + (int(seed) & 0x7FFFFFFF)) & 0x7FFFFFFF)
    offset = (((offset ^ (offset >> 15)) * 0x2C1B3C6D & 0x7FFFFFFF) % n).to(torch.int32)

    def key(rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        # (perm[col] + offset[row]) mod n, int32, the mod as one conditional subtraction;
        # a whole row needs no gather
        k = (perm if cols is None else perm[cols]) + offset[rows].unsqueeze(-1)
        return torch.where(k >= n, k - n, k)

    return key


def _top_k_ties_in_order(scores: torch.Tensor, k: int, tie_key: TieKey | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Column positions and values of each row's ``k`` largest scores, sorted by value.

    ``torch.topk`` leaves ties unordered (in practice it favours low columns). Here equal
    scores are taken and listed by ``tie_key(rows, cols)`` (smaller first; default: the
    column, as a stable sort would). The cost is a ``topk`` of ``k + 1``; when no two of
    those values are equal (continuous scores: nearly always) that is all, else sorts of
    ``k`` values follow, and rows whose k-th value is tied with values left out take a
    pass over the whole row (every row for a constant scorer). NaN scores rank last.
    """
    rows, n = scores.shape
    if k == 0 or rows == 0:
        return torch.empty((rows, 0), dtype=torch.int64), scores[:, :0]
    if scores.is_floating_point() and torch.isnan(scores).any():
        scores = scores.nan_to_num(nan=-math.inf)  # a NaN score ranks last, as no score
    top = torch.topk(scores, min(k + 1, n), dim=1)
    pos, vals = top.indices[:, :k], top.values[:, :k]
    if not bool((top.values[:, 1:] == top.values[:, :-1]).any()):
        # no two of the k + 1 largest scores equal (continuous scores: nearly every row):
        # no tie to settle, topk's order is the answer
        return pos, vals
    crossing = (torch.nonzero(top.values[:, k] == top.values[:, k - 1]).flatten() if k < n
                else torch.empty(0, dtype=torch.int64))
    if len(crossing):  # which of the k-th value's equals get in
        sub, kth = scores[crossing], vals[crossing, -1:]
        greater, tied = sub > kth, sub == kth
        need = k - greater.sum(dim=1, keepdim=True)
        if tie_key is None:  # the first ones in column order
            chosen = greater | (tied & (tied.cumsum(dim=1) <= need))
        else:  # those with the smallest keys
            keys = tie_key(crossing, None)
            keys = keys.masked_fill(~tied, torch.iinfo(keys.dtype).max)
            m = int(need.max())
            first = torch.topk(keys, m, dim=1, largest=False).indices
            chosen = greater.clone()
            chosen.scatter_(1, first, torch.arange(m)[None, :] < need)
            chosen |= greater
        pos = pos.clone()
        pos[crossing] = chosen.nonzero()[:, 1].reshape(len(crossing), k)
    # order by value; equal values by key
    if tie_key is None:
        pos = torch.sort(pos, dim=1).values
    else:
        keys = tie_key(torch.arange(rows), pos)
        pos = pos.gather(1, torch.sort(keys, dim=1, stable=True).indices)
    vals = scores.gather(1, pos)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return pos.gather(1, by_value), vals.gather(1, by_value)


# ---------------------------------------------------------------------------------------
# saved state: what a model declares it saves, checked in one place when it is loaded
@dataclass(frozen=True)
class Array:
    """A saved array: its ``shape`` (``None``: any length on that axis) and the ``dtype``
    the model uses. A saved array of another dtype of the same kind is cast to it (any
    float for a float; any integer, or bool, for an integer), never across kinds. Floats
    must be finite (and ``>= low`` when ``low`` is given); integers must lie in
    ``low <= v < high`` (both required for an integer array). ``equals``: a value the
    loader derives from other checked state, which the saved array must match."""

    shape: tuple[int | None, ...]
    dtype: torch.dtype = torch.float32
    low: int | None = None
    high: int | None = None
    equals: torch.Tensor | None = None


@dataclass(frozen=True)
class CSR:
    """A sparse matrix of ``shape`` saved as ``KEY_indptr`` (int64), ``KEY_indices``
    (int32 column indices) and ``KEY_data`` (finite float32): checked in full
    (``indptr`` from 0 to nnz, never decreasing; every index in range), also by scipy's
    ``check_format(full_check=True)``."""

    shape: tuple[int, int]


@dataclass(frozen=True)
class Module:
    """The state of a torch module: ``build(checked)`` makes it (on the meta device, so a
    doctored size allocates nothing; ``checked`` holds the arrays of the same spec
    checked so far), and every entry of its ``state_dict`` must be saved under
    ``prefix`` with that shape and dtype, floats finite; a buffer the build computes
    from checked state (a real tensor, not a meta one) must be saved equal to it."""

    build: Callable[[dict[str, torch.Tensor]], torch.nn.Module]
    prefix: str = ""


#: What a model saves: name -> spec (a :class:`CSR` or :class:`Module` covers several
#: arrays, named from its key or prefix).
StateSpec = dict[str, "Array | CSR | Module"]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_array(state: dict[str, torch.Tensor], name: str, spec: Array, where: str
                 ) -> torch.Tensor:
    if name not in state:
        raise ModelError(f"{where}{name}: missing")
    t = state[name]
    if not isinstance(t, torch.Tensor):
        raise ModelError(f"{where}{name}: not an array")
    shape = tuple(t.shape)
    if len(shape) != len(spec.shape) or any(want is not None and got != want
                                            for got, want in zip(shape, spec.shape,
                                                                 strict=True)):
        want_text = tuple("any" if s is None else s for s in spec.shape)
        raise ModelError(f"{where}{name}: shape {shape}, expected {want_text}")
    if spec.dtype.is_floating_point:
        if not t.dtype.is_floating_point:
            raise ModelError(f"{where}{name}: dtype {_dtype_name(t.dtype)}, expected "
                             f"{_dtype_name(spec.dtype)}")
        t = t.to(spec.dtype)
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{where}{name}: holds NaN or infinite values")
        if spec.low is not None and t.numel() and float(t.min()) < spec.low:
            raise ModelError(f"{where}{name}: values below {spec.low} (from "
                             f"{float(t.min()):g})")
    else:
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise ModelError(f"{where}{name}: dtype {_dtype_name(t.dtype)}, expected "
                             f"{_dtype_name(spec.dtype)}")
        assert spec.low is not None and spec.high is not None, "an integer needs a range"
        wide = t.to(torch.int64)  # (an unsigned 64-bit value past 2**63 turns negative)
        if wide.numel():
            lo, hi = int(wide.min()), int(wide.max())
            if lo < spec.low or hi >= spec.high:
                raise ModelError(f"{where}{name}: values from {lo} to {hi}, expected "
                                 f"{spec.low} to {spec.high - 1}")
        t = wide.to(spec.dtype)
    if spec.equals is not None:
        ref = spec.equals.to(t.dtype)
        same = (torch.allclose(t, ref, rtol=1e-5, atol=1e-7) if t.dtype.is_floating_point
                else torch.equal(t, ref))
        if not same:
            raise ModelError(f"{where}{name}: does not match what the model derives from "
                             "the rest of its saved state")
    return t


def _check_csr(state: dict[str, torch.Tensor], key: str, spec: CSR, where: str
               ) -> dict[str, torch.Tensor]:
    rows, cols = spec.shape
    n_big = 1 << 62
    indptr = _check_array(state, f"{key}_indptr", Array((rows + 1,), torch.int64, 0, n_big),
                          where)
    indices = _check_array(state, f"{key}_indices", Array((None,), torch.int32, 0, cols),
                           where)
    data = _check_array(state, f"{key}_data", Array((len(indices),)), where)
    ptr = indptr.numpy()
    if ptr[0] != 0 or ptr[-1] != len(indices) or bool((np.diff(ptr) < 0).any()):
        raise ModelError(f"{where}{key}_indptr: not the row pointers of {len(indices):,} "
                         "stored values (must run from 0 to that, never decreasing)")
    try:
        sp.csr_matrix((data.numpy(), indices.numpy(), ptr), shape=(rows, cols)
                      ).check_format(full_check=True)
    except ValueError as exc:
        raise ModelError(f"{where}{key}: not a valid sparse matrix ({exc})") from None
    return {f"{key}_indptr": indptr, f"{key}_indices": indices, f"{key}_data": data}


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Skips the in-place initialisation of meta tensors (a module built only for its
    shapes): on the meta device torch runs each through a slow Python decomposition."""

    _INIT = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_,
             torch.Tensor.fill_, torch.nn.init.normal_, torch.nn.init.uniform_,
             torch.nn.init.zeros_, torch.nn.init.constant_}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in self._INIT:
            target = args[0] if args else kwargs.get("tensor")
            if getattr(target, "is_meta", False):
                return target
        return func(*args, **kwargs)


def check_state(state: dict[str, torch.Tensor], spec: StateSpec, where: str
                ) -> dict[str, torch.Tensor]:
    """Every array of ``spec`` checked in ``state`` (see :class:`Array`, :class:`CSR`,
    :class:`Module`) and cast to its declared dtype; an array the spec does not name, or
    one that breaks its spec, raises :class:`ModelError` naming ``where`` and the array."""
    out: dict[str, torch.Tensor] = {}
    for key, s in spec.items():
        if isinstance(s, Array):
            out[key] = _check_array(state, key, s, where)
        elif isinstance(s, CSR):
            out.update(_check_csr(state, key, s, where))
    for s in spec.values():
        if not isinstance(s, Module):
            continue
        try:
            with torch.device("meta"), _SkipMetaInit():
                module = s.build(dict(out))
        except (ModelError, ConfigError, DataError):
            raise
        except Exception as exc:  # sizes torch refuses (a negative dimension)
            raise ModelError(f"{where}{s.prefix}*: the saved parameters do not build the "
                             f"model ({type(exc).__name__}: {exc})") from None
        for name, ref in module.state_dict().items():
            full = s.prefix + name
            derived = None if ref.is_meta else ref.detach()
            if ref.dtype.is_floating_point:
                rule = Array(tuple(ref.shape), ref.dtype, equals=derived)
            elif derived is not None:
                rule = Array(tuple(ref.shape), ref.dtype, -(1 << 62), 1 << 62, equals=derived)
            else:
                raise ModelError(f"{where}{full}: an integer array the model neither derives "
                                 "nor bounds")
            out[full] = _check_array(state, full, rule, where)
    stray = sorted(set(state) - set(out))
    if stray:
        raise ModelError(f"{where}{stray[0]}: unexpected array" + (
            f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""))
    return out


def prefixed(spec: StateSpec, prefix: str) -> StateSpec:
    """``spec`` with every array name under ``prefix`` (a blend's components)."""
    out: StateSpec = {}
    for key, s in spec.items():
        if isinstance(s, Module):
            def build(checked: dict[str, torch.Tensor], _b=s.build) -> torch.nn.Module:
                return _b({k[len(prefix):]: v for k, v in checked.items()
                           if k.startswith(prefix)})

            out[prefix + key] = Module(build, prefix + s.prefix)
        else:
            out[prefix + key] = s
    return out


class _ShortRepr(reprlib.Repr):
    """A ``repr`` with bounded work and length: a few elements per level, a few levels (a
    YAML alias bomb or a million-element list costs nothing), and an integer too long for
    ``repr`` (Python refuses over 4,300 digits) named by its size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 5, 5, 5
        self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 5
        self.maxstring = self.maxother = self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:  # over 60 digits: never converted to text
            digits = int(x.bit_length() * math.log10(2)) + 1  # exact, or one too many
            digits -= abs(x) < 10 ** (digits - 1)
            return f"<an integer of {digits} digits>"
        return super().repr_int(x, level)


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` for an error message: bounded in length and in the work it costs."""
    text = _ShortRepr().repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


_MISSING = object()


def extra_value(extra: dict[str, Any], key: str, rule: ParamRule, default: Any = _MISSING
                ) -> Any:
    """``extra[key]`` (or ``default`` when absent and one is given) once it passes
    ``rule``; :class:`ModelError` naming the field otherwise."""
    if key not in extra:
        if default is _MISSING:
            raise ModelError(f"meta.json: extra.{key} is missing")
        return default
    value = extra[key]
    if not rule.ok(value):
        raise ModelError(f"meta.json: extra.{key} must be {rule.text}, got {_shown(value)}")
    return value


# ---------------------------------------------------------------------------------------
# rules for hyperparameters and metadata values
@dataclass(frozen=True)
class ParamRule:
    """A check of one JSON value: ``ok(value)`` and what it asks for, in words."""

    ok: Callable[[Any], bool]
    text: str


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(
            v, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an int beyond float's range (e.g. 400 digits)
        return False


def int_rule(low: int, high: int | None = None) -> ParamRule:
    """An integer in ``low..high``."""
    return ParamRule(lambda v: _is_int(v) and low <= v and (high is None or v <= high),
                     f"an integer >= {low}" if high is None else
                     f"an integer in {low}..{high}")


def number_rule(low: float | None = None, high: float | None = None, *,
                optional: bool = False) -> ParamRule:
    """A finite number in ``[low, high]`` (``optional``: or None)."""
    def ok(v: Any) -> bool:
        if v is None:
            return optional
        return (_is_number(v) and (low is None or float(v) >= low)
                and (high is None or float(v) <= high))

    bounds = ("" if low is None and high is None else f" >= {low}" if high is None
              else f" <= {high}" if low is None else f" in [{low}, {high}]")
    return ParamRule(ok, f"a finite number{bounds}" + (" or null" if optional else ""))


def choice_rule(*values: Any) -> ParamRule:
    return ParamRule(lambda v: any(v == x and type(v) is type(x) for x in values),
                     "one of " + ", ".join(repr(x) for x in values))


#: Upper bounds of hyperparameters, whatever the data (docs/models.md): what a value can
#: size (a layer, a table's width, the negatives per event) or repeat, past any use; above
#: them a value is a typo, and would end in an allocation failure, an overflow in torch,
#: or the kernel's OOM killer instead of an error.
MAX_DIM = 8192            # embedding_dim, layer widths
MAX_EPOCHS = 100_000      # epochs, eval_every, patience
MAX_COUNT = 2**31 - 1     # batch_size, neighbors, block sizes (clipped to the data)
MAX_NEGATIVES = 1000      # sampled negatives per event
MAX_SEED = 2**63 - 1
#: Largest real-valued hyperparameter: they become float32 tensors.
MAX_NUMBER = float(np.finfo(np.float32).max)


def positive_rule(high: float = MAX_NUMBER) -> ParamRule:
    """A finite number in ``(0, high]``."""
    return ParamRule(lambda v: _is_number(v) and 0 < float(v) <= high,
                     f"a finite number > 0 and <= {high:g}")


def fraction_rule() -> ParamRule:
    """A number in ``[0, 1)`` (a dropout rate)."""
    return ParamRule(lambda v: _is_number(v) and 0 <= float(v) < 1, "a number in [0, 1)")


def optional_rule(rule: ParamRule) -> ParamRule:
    """``rule``, or ``None``."""
    return ParamRule(lambda v: v is None or rule.ok(v), f"null or {rule.text}")


def _is_device(v: Any) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda") or (
        v.startswith("cuda:") and 0 < len(v) - 5 <= 4 and v[5:].isascii()
        and v[5:].isdigit()))


#: Where a model trains: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``
#: (whether that device exists is checked when it is resolved).
DEVICE_RULE = ParamRule(_is_device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
SEED_RULE = int_rule(0, MAX_SEED)


def check_params(model: Recommender, rules: dict[str, ParamRule]) -> None:
    """Raise :class:`ConfigError` naming the model and the parameter for the first
    hyperparameter that breaks its rule: ``_validate_params`` checks every constructor
    parameter so, before anything is built."""
    for name, rule in rules.items():
        value = getattr(model, name)
        if not rule.ok(value):
            raise ConfigError(f"{model.name}: {name} must be {rule.text}, got "
                              f"{_shown(value)}")


#: ``None`` or a mapping of group names to finite weights >= 0 (``feature_weights``).
WEIGHTS_RULE = ParamRule(
    lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(k, str) and _is_number(w) and float(w) >= 0 for k, w in v.items())),
    "null or a mapping of names to finite numbers >= 0")
#: A list of strings (feature names, groups).
STRINGS_RULE = ParamRule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                         "a list of strings")
BOOL_RULE = ParamRule(lambda v: isinstance(v, bool), "true or false")
#: ``[low, high]``: two finite numbers, ``low <= high`` (a rating range).
RANGE_RULE = ParamRule(
    lambda v: (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)
               and float(v[0]) <= float(v[1])),
    "[low, high]: two finite numbers, low <= high")


def _instantiate(model_cls: type[Recommender], saved: dict[str, Any], meta_path: Path,
                 path: Path) -> Recommender:
    params = dict(saved)
    defaults = {p.name: p.default for p in inspect.signature(model_cls.__init__)
                .parameters.values()}
    for key, val in params.items():  # JSON has no tuples
        if isinstance(defaults.get(key), tuple) and isinstance(val, list):
            params[key] = tuple(val)
    if not torch.cuda.is_available() and _on_cuda(params):
        log.warning("%s was trained on a GPU; this machine has none: loading it on the CPU",
                    path)
        params = _on_cpu(params)
    try:  # no _validate_params here: a model saved by an earlier version must load
        return model_cls(**params)
    except (TypeError, ConfigError) as exc:
        raise ModelError(f"{meta_path}: parameters do not fit {model_cls.__name__}: {exc}"
                         ) from None


#: The files of a saved model (item_metadata.parquet only when metadata is attached).
MODEL_FILES = ("meta.json", "weights.safetensors", "users.parquet", "items.parquet",
               "item_metadata.parquet")
_REQUIRED_FILES = {"weights.safetensors", "users.parquet", "items.parquet"}


def _read_artifact(path: Path, reader: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``meta.json`` (its structure checked) and the bytes of every file it lists, each
    matching its checksum, all read through ``reader`` (one directory handle)."""
    meta_path = path / "meta.json"
    raw = reader.read("meta.json")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{meta_path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelError(f"{meta_path}: not a recforge model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{meta_path}: format version {_shown(meta.get('format_version'))} "
                         f"is not supported (this recforge reads version {FORMAT_VERSION})")
    for key, kind in (("model", str), ("params", dict), ("files", dict)):
        if not isinstance(meta.get(key), kind):
            raise ModelError(f"{meta_path}: {key!r} is missing or not a "
                             f"{'string' if kind is str else 'JSON object'}")
    files = meta["files"]
    unknown = sorted(set(files) - set(MODEL_FILES[1:]))
    if unknown:  # never a path: "../../etc/..." must not be read
        raise ModelError(f"{meta_path}: 'files' names {_shown(unknown[0])}, which is not a "
                         f"file of a saved model ({', '.join(MODEL_FILES[1:])})")
    needed = set(_REQUIRED_FILES)
    if "item_metadata.parquet" in reader.names():
        needed.add("item_metadata.parquet")
    if needed - set(files):
        raise ModelError(f"{meta_path}: no checksum for {sorted(needed - set(files))}")
    blobs: dict[str, bytes] = {}
    for fname, digest in files.items():
        data = reader.read(fname)
        if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
            raise ModelError(f"{path / fname}: checksum mismatch (file truncated or modified)")
        blobs[fname] = data
    return meta, blobs


def _is_saved_model(path: Path) -> bool:
    """Whether ``path/meta.json`` parses and names the recforge model format."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def check_model_target(path: str | os.PathLike) -> None:
    """Refuse to save a model over anything but an earlier saved model or an empty
    directory: saving replaces the whole directory, and anything else there would be lost.

    An earlier model is a directory whose ``meta.json`` parses and names the recforge
    model format and which holds nothing but a saved model's files. A symlink is followed
    (the directory it points to is the one replaced)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ModelError(f"{path}: name the model's own directory (e.g. models/ease), not "
                         "the current or parent directory")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if not target.exists():
        return
    if not target.is_dir():
        raise ModelError(f"{path} exists and is not a directory; a model is saved as a "
                         "directory of its own")
    names = {p.name for p in target.iterdir()}
    if not names:
        return
    if not _is_saved_model(target):
        what = ("a meta.json that is not a recforge model's" if "meta.json" in names
                else "files that are not a saved recforge model")
        raise ModelError(f"{path} exists and holds {what}; saving would replace the "
                         "directory and everything in it: choose a new or empty one")
    others = sorted(names - set(MODEL_FILES))
    if others:
        raise ModelError(f"{path} holds a saved model but also {_shown(others[0])}"
                         + (f" and {len(others) - 1} other file(s)" if len(others) > 1 else "")
                         + ", which saving would delete: move them, or save elsewhere")


def _on_cuda(params: Any) -> bool:
    """Whether saved parameters (a blend's nested ones too) name a CUDA device."""
    if isinstance(params, dict):
        return any((k == "device" and isinstance(v, str) and v.startswith("cuda"))
                   or _on_cuda(v) for k, v in params.items())
    return False


def _on_cpu(params: Any) -> Any:
    """``params`` with every CUDA device replaced by the CPU."""
    if isinstance(params, dict):
        return {k: ("cpu" if k == "device" and isinstance(v, str) and v.startswith("cuda")
                    else _on_cpu(v)) for k, v in params.items()}
    return params


def _history_models() -> list[str]:
    from recforge.models.registry import available_models, get_model_class

    return [n for n in available_models() if getattr(get_model_class(n), "supports_history",
                                                      False)]


def fold_in_implicit(item_factors: torch.Tensor, items: np.ndarray, weights: np.ndarray | None,
                     alpha: float, reg: float) -> torch.Tensor:
    """A user vector for an unseen history against fixed item factors ``Y`` (Hu et al.
    2008): ``(Y'Y + alpha Y_h' R Y_h + reg I) x = Y_h' (1 + alpha r)`` with ``r`` the
    history's weights (ones by default): the weighted least-squares solve ALS makes for
    every user, here for one."""
    y = item_factors.float()
    d = y.shape[1]
    w = torch.ones(len(items)) if weights is None else torch.from_numpy(
        np.asarray(weights, np.float32))
    w = w.to(y.device)
    yh = y[torch.from_numpy(items).to(y.device)]
    a = y.T @ y + alpha * (yh.T * w) @ yh + reg * torch.eye(d, device=y.device)
    b = yh.T @ (1.0 + alpha * w)
    return torch.linalg.solve(a.double(), b.double()).float()


def _write_item_metadata(path: Path, frame: pd.DataFrame) -> None:
    out = frame.copy()
    for col in out.columns:  # lists (genres) and mixed objects as text: Parquet-safe
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "|".join(map(str, v))
                                    if isinstance(v, (list, tuple, np.ndarray))
                                    else (None if v is None else str(v)))
    out.to_parquet(path, index=False)


def _write_vocab(path: Path, vocab: Vocabulary) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = vocab.ids
    arr = pa.array(ids.astype(np.int64)) if vocab.is_integer else pa.array(ids.tolist(),
                                                                            type=pa.string())
    pq.write_table(pa.table({"id": arr}), path)


def _read_vocab(path: Path, data: bytes) -> Vocabulary:
    """A vocabulary file's ids: one ``id`` column of int64 or strings, no nulls, each id
    once; :class:`ModelError` naming the file otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ModelError(f"{path}: cannot read vocabulary ({exc})") from None
    if "id" not in table.column_names:
        raise ModelError(f"{path}: no 'id' column")
    col = table.column("id")
    if col.null_count:
        raise ModelError(f"{path}: {col.null_count:,} missing (null) ids")
    if pa.types.is_integer(col.type):
        ids = col.to_numpy().astype(np.int64)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        ids = np.asarray(col.to_pylist(), dtype=object)
    else:
        raise ModelError(f"{path}: ids of type {col.type}, expected integers or strings")
    try:
        return Vocabulary(ids)
    except ValueError as exc:  # a repeated id
        raise ModelError(f"{path}: {exc}") from None


def _read_item_metadata(path: Path, data: bytes, n_items: int) -> pd.DataFrame:
    import io

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ModelError(f"{path}: cannot read item metadata ({exc})") from None
    if len(frame) != n_items:
        raise ModelError(f"{path}: {len(frame):,} rows for the model's {n_items:,} items")
    return frame


def _unknown_param_message(cls: type, key: str) -> str:
    from difflib import get_close_matches

    names = cls._param_names()
    hint = get_close_matches(key, names, n=1) if isinstance(key, str) else []
    return (f"{cls.__name__} has no parameter {_shown(key)}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (parameters: {', '.join(names)})")
