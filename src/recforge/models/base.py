"""The :class:`Recommender` base class: the one model API.

A model implements two things: ``_fit(train, valid, options)`` (learn state, attributes
ending in ``_``; ``options`` is the fit's :class:`~recforge.models.contracts.FitOptions`)
and ``_score(users)`` (a ``[batch, n_items]`` tensor of scores for a batch of
internal user indices). It declares what it can do as
``capabilities`` (:class:`~recforge.models.contracts.Capabilities`), and may declare its
``tuning_space`` and ``quick_params``. Everything else is written once, here:

* hyperparameters are the keyword arguments of ``__init__``; :meth:`get_params` and
  :meth:`clone` read them from the signature (scikit-learn's convention); their rules
  live in :mod:`recforge.models.params`;
* :meth:`recommend` scores users in memory-bounded blocks and ranks them with
  :func:`recforge.ranking.top_k` (seen items masked, ties by popularity, popular items for
  unknown users); it speaks external ids;
* :meth:`similar_items` uses ``_item_similarity`` (cosine of item embeddings by default);
* :meth:`save` / :meth:`load` write and read the artefact of :mod:`recforge.models.artifact`
  (safetensors weights, JSON / Parquet for the rest, atomically, checksummed; no pickle).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError
from recforge.models.artifact import StateSpec, load_model, save_model
from recforge.models.contracts import Capabilities, FitOptions, SearchSpace
from recforge.models.history import history_index
from recforge.models.outputs import check_k, passed_ids
from recforge.models.params import ParamRule, check_finite, shown, unknown_param_message
from recforge.models.registry import models_with
from recforge.models.unlearning import ForgetReport, forget_users
from recforge.ranking import Popular, TieKey, random_ties, rank_ties, top_k

log = logging.getLogger(__name__)

#: Scores held in memory at once during batched scoring (floats): bounds memory use.
SCORE_BLOCK_ELEMENTS = 1 << 24

UnknownUsers = Literal["error", "skip", "popular"]
#: What :meth:`Recommender.predict` gives a pair with an unknown user or item.
UnknownPairs = Literal["baseline", "skip", "error"]


class Recommender:
    """Base class of every recforge model. See the module docstring."""

    #: Registry name (``recforge train NAME``).
    name: ClassVar[str] = ""
    #: What the model can do (set once per class; see :meth:`effective_capabilities`).
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: ``recforge tune``'s default search space (hyperparameter -> spec; empty: none).
    tuning_space: ClassVar[SearchSpace] = {}
    #: Hyperparameters of ``recforge quickstart`` (sized for a laptop; empty: defaults).
    quick_params: ClassVar[dict[str, Any]] = {}

    #: How :meth:`forget_users` removes users (:mod:`recforge.models.unlearning`): "exact"
    #: (the model becomes the one trained without them; the model implements
    #: :meth:`_forget`) or "none" (gradient models: their user rows only).
    forgetting: ClassVar[str] = "none"

    def effective_capabilities(self) -> Capabilities:
        """What this instance can do with its hyperparameters: the class's
        :attr:`capabilities`, narrowed by models where one depends on a hyperparameter
        (override; NCF rates only with ``loss="mse"``)."""
        return self.capabilities

    @property
    def predicts_ratings(self) -> bool:
        """Whether :meth:`predict` gives ratings (the effective ``rates``)."""
        return self.effective_capabilities().rates

    @property
    def supports_history(self) -> bool:
        """Whether :meth:`recommend_for_history` works (the effective ``folds_in_history``)."""
        return self.effective_capabilities().folds_in_history

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
                raise ConfigError(unknown_param_message(type(self), key))
            setattr(self, key, val)
        return self

    def clone(self) -> Recommender:
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__)
                    .parameters.values() if p.name != "self"}
        parts = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(parts)})"

    # ----------------------------------------------------------------------------------
    # fitting
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "items_")

    def check_fitted(self) -> None:
        """Raise :class:`ModelError` unless the model is fitted."""
        if not self.is_fitted:
            raise ModelError(f"{type(self).__name__} is not fitted; call fit(train) first")

    def _validate_params(self) -> None:
        """Raise :class:`ConfigError` for bad hyperparameters (override in models)."""

    def _check_finite_params(self) -> None:
        """No hyperparameter is NaN or infinite, nested ones included (see
        :func:`recforge.models.params.check_finite`)."""
        check_finite(self.name, self.get_params())

    def fit(self, train: Interactions, valid: Interactions | None = None) -> Recommender:
        """Learn from ``train`` (``valid`` is used by models that early-stop). Returns self."""
        return self._fit_with(train, valid, self._fit_options())

    def _fit_options(self) -> FitOptions:
        """The :class:`FitOptions` of ``fit``'s keyword arguments besides the data (override
        with ``fit``: gradient models take the trainer's; feature models add theirs)."""
        return FitOptions()

    def _fit_with(self, train: Interactions, valid: Interactions | None,
                  options: FitOptions) -> Recommender:
        """What every public ``fit`` ends in: check the data, then ``_fit(train, valid,
        options)`` all or nothing. Returns self."""
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
            self._fit(train, valid, options)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return self

    def _fit(self, train: Interactions, valid: Interactions | None, options: FitOptions) -> None:
        """Learn from ``train`` (override); ``options``: what ``fit`` was given besides data."""
        raise NotImplementedError

    @property
    def n_users(self) -> int:
        self.check_fitted()
        return len(self.users_)

    @property
    def n_items(self) -> int:
        self.check_fitted()
        return len(self.items_)

    def forget_users(self, users: Any, *, retrain: bool = False,
                     data: Interactions | None = None) -> ForgetReport:
        """Remove users (external ids) and what the model learned from them, in place:
        exactly, or their own rows only, as :func:`recforge.models.unlearning.forget_users`
        says per model; ``retrain`` fits again without them."""
        return forget_users(self, users, retrain=retrain, data=data)

    def _forget(self, keep: np.ndarray, removed: sp.csr_matrix) -> str:
        """Update the learned state once the users not in ``keep`` (a mask over the old
        user indices; ``removed``: their rows of ``seen_``) have left ``users_``, ``seen_``
        and ``item_popularity_`` (override with ``forgetting = "exact"``); returns the
        method's name."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------
    # scoring
    def _score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for internal user indices (override)."""
        raise NotImplementedError

    def score(self, users: Any, items: Any = None) -> torch.Tensor:
        """Scores for internal user indices; all items (``[B, n_items]``) or the given item
        indices (``[B, len(items)]``). Higher is better."""
        self.check_fitted()
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

    def score_sequences(self, users: np.ndarray, history: Interactions) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for the next item of each user, given each
        user's ordered history in ``history`` (an :class:`Interactions` over the model's
        own vocabularies; ``users`` are internal user indices of both).

        This is what next-item evaluation and serving call. A model that reads order
        (``capabilities.reads_order``) encodes ``history.sequences()``; every other model
        scores the user as it was trained (:meth:`score`), so the comparison between
        sequential and non-sequential models is made on the same call.
        """
        return self.score(users)

    def score_block_size(self, batch_size: int | None = None) -> int:
        """Users scored at once: ``batch_size`` when given, else as many as keep a block
        of scores under :data:`SCORE_BLOCK_ELEMENTS`."""
        if batch_size is not None:
            if batch_size < 1:
                raise ConfigError("batch_size must be >= 1")
            return batch_size
        return max(1, SCORE_BLOCK_ELEMENTS // max(1, self.n_items))

    def iter_top_k(self, users: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None,
                   candidates: np.ndarray | None = None, batch_size: int | None = None,
                   tie_rank: np.ndarray | None = None, tie_seed: int | None = None,
                   popular_fallback: bool = False,
                   ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Top-``k`` item indices and scores for internal user indices, in blocks: the
        model's scores ranked by :func:`recforge.ranking.top_k`.

        Yields ``(user_block, item_idx [B, k], scores [B, k])``. Items stored in
        ``exclude[user]`` get ``-inf`` before the top-k (so they come last, with score
        ``-inf``, only when fewer than ``k`` items remain). ``candidates`` restricts the
        ranking to those item indices. Equal scores are taken and ordered by ``tie_rank``
        (each item's rank, lower first; ``recommend`` passes popularity ranks), or with
        ``tie_seed`` in a pseudo-random order of each (user, item) pair, the same however
        users are batched (the evaluation does: a model that scores many items alike gets
        what chance gives, not the lowest ids); with neither, by item index. With
        ``popular_fallback``, a user index of ``-1`` gets the most popular items.
        """
        self.check_fitted()
        users = np.asarray(users, dtype=np.int64)
        n_items = self.n_items
        ties: TieKey | None = None
        if tie_rank is not None:
            rank = torch.as_tensor(np.asarray(tie_rank, dtype=np.int64))
            if rank.shape != (n_items,):
                raise ConfigError(f"tie_rank must give a rank to each of the {n_items} items")
            ties = rank_ties(rank)
        popular = self.popular_items() if popular_fallback else None
        block = self.score_block_size(batch_size)
        for start in range(0, len(users), block):
            ub = users[start:start + block]
            if tie_seed is not None and tie_rank is None:
                ties = random_ties(torch.from_numpy(ub), n_items, tie_seed)
            items, scores = top_k(self.score, ub, k, n_items, exclude=exclude,
                                  candidates=candidates, ties=ties, popular=popular)
            yield ub, items, scores

    def _user_index(self, users: Any, unknown: UnknownUsers) -> tuple[np.ndarray, np.ndarray]:
        ext = np.atleast_1d(np.asarray(users, dtype=object if not isinstance(users, np.ndarray)
                                       else None))
        idx = self.users_.index(ext)
        bad = idx < 0
        if bad.any() and unknown == "error":
            ids = ", ".join(repr(x) for x in ext[bad][:5].tolist())
            raise ModelError(f"{int(bad.sum())} unknown user id(s): {ids}"
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
        from 1). The ``user`` column holds the ids as passed, in their dtype (see
        :func:`~recforge.models.outputs.passed_ids`), so it merges with the frame they came from; ``item`` holds the
        vocabulary's ids. Items the user interacted with in training are excluded unless
        ``include_seen=True``. ``candidates`` (external item ids) restricts the ranking.
        Unknown users raise :class:`ModelError` (``unknown="error"``), are left out
        (``"skip"``), or get the most popular items (``"popular"``). With ``"popular"`` the
        frame has two more columns: ``fallback`` (true on the popular rows) and
        ``popularity`` (the item's training users, on those rows); their ``score`` is NaN,
        since a count is not on the model's scale (the server answers the same way).
        """
        self.check_fitted()
        check_k(k)
        _, idx = self._user_index(users, unknown)
        cand_idx = self._candidate_index(candidates)
        # the output's user column: the ids as passed, in their dtype (a join key)
        ext = passed_ids(users)
        if unknown != "popular":
            keep = np.flatnonzero(idx >= 0)
            ext, idx = ext.take(keep), idx[keep]
        frames, fallback = [], []
        at = 0
        # equal scores (a short history, a cold item) are ordered by popularity
        for ub, items, scores in self.iter_top_k(
                idx, int(k), exclude=None if include_seen else self.seen_,
                candidates=cand_idx, batch_size=batch_size,
                tie_rank=self.popularity_rank(), popular_fallback=unknown == "popular"):
            frames.append(self._frame(ext[at:at + len(ub)], items, scores))
            # _frame keeps each user's finite slots: which rows are popular fallbacks
            fallback.append(np.repeat(np.asarray(ub) < 0,
                                      torch.isfinite(scores).sum(1).cpu().numpy()))
            at += len(ub)
        if not frames:
            frame = pd.DataFrame({"user": pd.Series(ext[:0], dtype=ext.dtype),
                                  "item": pd.Series(self.items_.ids[:0]),
                                  "rank": pd.Series([], dtype=np.int64),
                                  "score": pd.Series([], dtype=np.float32)})
        else:
            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if unknown == "popular":
            frame = self._mark_fallbacks(frame, np.concatenate(fallback) if fallback
                                         else np.zeros(0, bool))
        return frame

    def _mark_fallbacks(self, frame: pd.DataFrame, fallback: np.ndarray) -> pd.DataFrame:
        """``frame`` with its popular rows (``fallback``, one flag per row) marked:
        ``score`` NaN and the item's training users in ``popularity`` (NaN elsewhere)."""
        frame["fallback"] = fallback
        items = self.items_.index(frame["item"].to_numpy())
        frame["popularity"] = np.where(fallback, self.item_popularity_[items], np.nan)
        frame["score"] = np.where(fallback, np.float32("nan"), frame["score"]
                                  ).astype(np.float32)
        return frame

    def _candidate_index(self, candidates: Any) -> np.ndarray | None:
        """Item indices of external ``candidates`` (None: no restriction); unknown ids
        raise :class:`ModelError`."""
        if candidates is None:
            return None
        cand_idx = self.items_.index(candidates)
        if (cand_idx < 0).any():
            bad = np.atleast_1d(np.asarray(candidates, dtype=object))[cand_idx < 0]
            raise ModelError(f"unknown candidate item id(s): {bad[:5].tolist()}")
        return cand_idx

    def popularity_order(self) -> np.ndarray:
        """Item indices from the most to the least popular (ties: by index); computed once
        per fit (a fitted attribute, so a refit drops it)."""
        order = getattr(self, "popularity_order_", None)
        if order is None or len(order) != len(self.item_popularity_):
            order = np.argsort(-self.item_popularity_, kind="stable")
            self.popularity_order_ = order
        return order

    def popularity_rank(self) -> np.ndarray:
        """Each item's place in :meth:`popularity_order` (0: the most popular)."""
        rank = getattr(self, "popularity_rank_", None)
        if rank is None or len(rank) != len(self.item_popularity_):
            rank = np.empty(len(self.item_popularity_), dtype=np.int64)
            rank[self.popularity_order()] = np.arange(len(rank))
            self.popularity_rank_ = rank
        return rank

    def popular_items(self) -> Popular:
        """The ranking of users without scores (unknown ones): the most popular items
        first, scored by their training users."""
        order = self.popularity_order()
        return Popular(order, self.item_popularity_[order].astype(np.float32))

    # ----------------------------------------------------------------------------------
    # users the model never saw (models that declare ``folds_in_history``)
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
        self.check_fitted()
        if not self.supports_history:
            supported = ", ".join(models_with("folds_in_history"))
            raise ModelError(f"{self.name!r} cannot score a history it was not trained on; "
                             f"models that can: {supported}")
        check_k(k)
        if unknown not in ("error", "skip"):
            raise ConfigError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        idx, vals, bad = history_index(self.items_, items, values, unknown)
        with torch.no_grad():
            scores = self._score_history(idx, vals).float().reshape(1, -1).clone()
        ties = rank_ties(torch.from_numpy(self.popularity_rank()))  # as recommend has them
        pos, top = top_k(lambda _: scores, np.zeros(1, np.int64), int(k), scores.shape[1],
                         extra=idx if exclude_history else None,
                         candidates=self._candidate_index(candidates), ties=ties)
        frame = self._frame(np.zeros(1, dtype=object), pos, top).drop(columns="user")
        frame.attrs["unknown_items"] = bad.tolist()
        return frame

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Scores ``[n_items]`` for an unseen user with these item indices (override and
        declare ``folds_in_history``)."""
        raise NotImplementedError

    def _frame(self, ext_users: Any, items: torch.Tensor, scores: torch.Tensor
               ) -> pd.DataFrame:
        """Rows ``user, item, rank, score``; slots with a non-finite score are left out.
        ``ext_users`` (a numpy or pandas array, one per row of ``items``) keeps its dtype."""
        b, k = items.shape
        it = items.cpu().numpy().ravel()
        sc = scores.cpu().numpy().ravel()
        keep = np.isfinite(sc)
        return pd.DataFrame({
            # an explicit dtype: pandas would infer ``str`` for an object array of text
            "user": pd.Series(ext_users.take(np.repeat(np.arange(b), k)[keep]),
                              dtype=ext_users.dtype),
            "item": self.items_.ids[it[keep]],
            "rank": np.tile(np.arange(1, k + 1), b)[keep],
            "score": sc[keep],
        })

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

    def _similarity_scores(self, items: np.ndarray) -> torch.Tensor:
        """Similarities of ``items`` to every item, no similarity at all (0) as ``-inf``."""
        with torch.no_grad():
            sims = self._item_similarity(torch.from_numpy(items)).float().clone()
        sims[sims == 0] = -math.inf
        return sims

    def similar_items(self, items: Any, k: int = 10, *, batch_size: int | None = None
                      ) -> pd.DataFrame:
        """The ``k`` items most similar to each given item (external ids).

        Returns columns ``item, similar, rank, score``: ``item`` holds the ids as passed,
        in their dtype (see :func:`~recforge.models.outputs.passed_ids`), ``similar`` the vocabulary's ids. An item is
        never its own neighbour.
        Items with no similarity at all (a score of exactly 0: no user or feature in common,
        as item-kNN and content models say) are left out, so fewer than ``k`` rows may come
        back for an item. Unknown item ids raise :class:`ModelError`.
        """
        self.check_fitted()
        check_k(k)
        ext = passed_ids(items)
        if len(ext) == 0:
            return pd.DataFrame({"item": pd.Series(ext, dtype=ext.dtype),
                                 "similar": pd.Series(self.items_.ids[:0]),
                                 "rank": pd.Series([], dtype=np.int64),
                                 "score": pd.Series([], dtype=np.float32)})
        idx = self.items_.index(np.asarray(ext, dtype=object))
        if (idx < 0).any():
            bad = np.asarray(ext, dtype=object)[idx < 0]
            raise ModelError(f"unknown item id(s): {bad[:5].tolist()}")
        k = min(int(k), self.n_items - 1)
        block = self.score_block_size(batch_size)
        ties = rank_ties(torch.from_numpy(self.popularity_rank()))  # equal: the popular first
        frames = []
        for start in range(0, len(idx), block):
            ib = idx[start:start + block]
            rows = np.arange(len(ib))
            # an item is never its own neighbour: row b excludes item ib[b]
            own = sp.csr_matrix((np.ones(len(ib), np.float32), ib, np.arange(len(ib) + 1)),
                                shape=(len(ib), self.n_items))
            pos, vals = top_k(lambda _, ib=ib: self._similarity_scores(ib), rows, k,
                              self.n_items, exclude=own, ties=ties)
            f = self._frame(ext[start:start + block], pos, vals)
            frames.append(f.rename(columns={"user": "item", "item": "similar"}))
        return pd.concat(frames, ignore_index=True)

    # ----------------------------------------------------------------------------------
    # rating prediction
    def predict(self, users: Any, items: Any, *,
                unknown: UnknownPairs = "baseline") -> np.ndarray:
        """Predicted ratings for (user, item) pairs of external ids (rating models only;
        ranking models raise :class:`ModelError`), one per pair, in order.

        ``unknown`` says what a pair with a user or item the model never saw gets:
        ``"baseline"`` (default) the model's fallback, never NaN (the global mean plus
        the bias of the known user or item for models with biases, see
        :meth:`_fallback_index`); ``"skip"`` NaN, for the caller to leave out (``recforge
        predict --unknown skip`` drops those rows); ``"error"`` :class:`ModelError`
        naming them.
        """
        self.check_fitted()
        if unknown not in ("baseline", "skip", "error"):
            raise ConfigError(f"unknown must be 'baseline', 'skip' or 'error', got {unknown!r}")
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
        if not ok.all():
            if unknown == "error":
                bad = np.flatnonzero(~ok)
                pairs = zip(np.atleast_1d(np.asarray(users))[bad[:5]].tolist(),
                            np.atleast_1d(np.asarray(items))[bad[:5]].tolist(), strict=True)
                shown_pairs = ", ".join(f"({u!r}, {i!r})" for u, i in pairs)
                raise ModelError(f"{len(bad)} pair(s) with a user or item unknown to the "
                                 f"model: {shown_pairs}{' ...' if len(bad) > 5 else ''}; "
                                 "pass unknown='baseline' or 'skip' (recforge predict: "
                                 "--unknown)")
            if unknown == "baseline":
                out[~ok] = self._fallback_index(u[~ok], i[~ok])
        return out

    def _fallback_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predictions for pairs whose user or item (index ``-1``) the model never saw:
        by default the training mean rating (``mean_`` where the model keeps one), clipped
        to ``rating_range_``; models with biases add the known one (override)."""
        mean = getattr(self, "mean_", None)
        if mean is None:
            mean = float(self.seen_.data.mean()) if self.seen_.nnz else 0.0
        lo, hi = getattr(self, "rating_range_", (mean, mean))
        return np.full(len(users), min(max(float(mean), lo), hi), dtype=np.float32)

    def predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for pairs of internal user and item indices (rating models;
        others raise :class:`ModelError`)."""
        self.check_fitted()
        return self._predict_index(np.asarray(users, dtype=np.int64),
                                   np.asarray(items, dtype=np.int64))

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
        self.check_fitted()
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
        name -> :class:`~recforge.models.artifact.Array`, ``CSR`` or ``Module``, in terms of
        ``n_users``, ``n_items``, the hyperparameters and ``extra`` (check what it reads
        with :func:`~recforge.models.params.extra_value`). Called on the loaded model once
        its vocabularies, seen items and item popularity are restored and checked. Every
        saved array must be declared: an array the spec does not name is refused."""
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
    #: values for hyperparameters added after older artefacts were saved, the ones that
    #: reproduce those artefacts (read when loading; a missing key takes the default)
    saved_before: ClassVar[dict[str, Any]] = {}

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
                                 f"{shown(value)}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to the directory ``path``, replacing an earlier saved
        model there atomically (see :func:`recforge._fs.atomic_dir`): a reader of ``path``
        finds the old model or the new one, complete, at every moment. The format is
        :mod:`recforge.models.artifact`'s."""
        self.check_fitted()
        return save_model(self, path)

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
        the old model or the new one, never a mix. Loaded from a subclass, the saved
        model must be one of it.
        """
        return load_model(path, None if cls is Recommender else cls)
