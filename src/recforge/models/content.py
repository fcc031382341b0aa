"""Content-based filtering: recommend items whose features resemble what the user liked.

Every item has a profile: its feature row (see :mod:`recforge.data.features`), each
feature group scaled to unit length and weighted by ``feature_weights``, then the whole row
to unit length. A user's profile is the weighted mean of the profiles of the items in their
history, with ratings centred on the user's mean when the data has ratings (so a disliked
item pushes its features away), and ones for implicit feedback. An item's score is the
cosine between the user's profile and the item's.

Items need no interactions: anything with features can be recommended and has neighbours,
which is what a new catalogue and cold items need. :meth:`ContentBased.explain` says which
items of the history and which features (genres, tags, words) produced a score.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.features import Features
from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError, ModelError
from recforge.models.artifact import CSR, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.history import history_row
from recforge.models.modalities import best_in_history, group_blocks
from recforge.models.params import (
    BOOL_RULE,
    MAX_NUMBER,
    STRINGS_RULE,
    WEIGHTS_RULE,
    check_params,
    extra_value,
    number_rule,
)
from recforge.models.registry import models_with

__all__ = ["ContentBased", "FeatureModelMixin"]


class FeatureModelMixin:
    """Shared handling of side features for models that take them in ``fit``.

    ``fit(train, valid=None, *, item_features=None, user_features=None)``: items that only
    the features know (a new catalogue entry) join the item vocabulary, so they can be
    scored and recommended although no one has interacted with them yet. The aligned
    features reach ``_fit`` in its :class:`~recforge.models.contracts.FitOptions`. The
    model's capabilities say whether it needs item features (``requires_item_features``)
    and takes user features (``uses_user_features``; else passing them is an error, not
    ignored); ``options`` are the other keyword arguments of the model's ``fit``.

    ``movielens_words``: whether the MovieLens metadata the CLI and experiments build for
    the model (``item_features: auto``) carries the TF-IDF words of titles and tags
    beside their text vector (default: the vector alone, which ``content`` ranks best).
    """

    movielens_words: ClassVar[bool] = False

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            item_features: Features | None = None, user_features: Features | None = None,
            **options: Any) -> Any:
        name, capabilities = self.name, self.capabilities  # type: ignore[attr-defined]
        if user_features is not None and not capabilities.uses_user_features:
            raise ConfigError(f"{name} does not use user features; models that do: "
                              f"{', '.join(models_with('uses_user_features'))}")
        if item_features is None and capabilities.requires_item_features:
            raise ConfigError(f"{name}: fit needs item_features (see recforge.data.features; "
                              "the CLI takes --item-features FILE)")
        if item_features is not None:
            if not isinstance(item_features, Features):
                raise ConfigError("item_features must be a recforge.data.features.Features")
            if item_features.align(train.items).matrix.nnz == 0:
                raise DataError("no item of the training data has any feature; check that "
                                "the feature table's ids are the interaction file's item ids "
                                f"(features: {item_features.ids.ids[:3].tolist()}..., "
                                f"interactions: {train.items.ids[:3].tolist()}...)")
            items = item_features.union_ids(train.items)
            if items != train.items:
                train = train.reindex(train.users, items)
                if valid is not None:
                    valid = valid.reindex(train.users, items, unknown="drop")
            item_features = item_features.align(items)
        if user_features is not None:
            if not isinstance(user_features, Features):
                raise ConfigError("user_features must be a recforge.data.features.Features")
            user_features = user_features.align(train.users)
        fit_options = replace(self._fit_options(**options),  # type: ignore[attr-defined]
                              item_features=item_features, user_features=user_features)
        return self._fit_with(train, valid, fit_options)  # type: ignore[attr-defined]

    def similar_in_history(self, item: Any, *, user: Any = None,
                           history: Any = None) -> pd.DataFrame:
        """For a recommended ``item``, the most similar item of a user's history by each
        feature group (modality): "because you liked X: similar text", "similar image".

        ``user`` (a known user's history) or ``history`` (item ids). Returns one row per
        group where ``item`` has features: ``group, item, similarity`` (cosine of that
        group's block), most similar first; groups where no history item shares anything
        are left out.
        """
        self.check_fitted()  # type: ignore[attr-defined]
        feats: Features | None = getattr(self, "item_features_", None)
        if feats is None:
            raise ModelError(f"{self.name} was fitted without item features")  # type: ignore[attr-defined]
        items = self.items_  # type: ignore[attr-defined]
        i = int(items.index([item])[0])
        if i < 0:
            raise ModelError(f"unknown item id {item!r}")
        if (user is None) == (history is None):
            raise ConfigError("give either user= or history=")
        if user is not None:
            u = int(self.users_.index([user])[0])  # type: ignore[attr-defined]
            if u < 0:
                raise ModelError(f"unknown user id {user!r}")
            hist = self.seen_[u].indices  # type: ignore[attr-defined]
        else:
            hist = items.index(np.atleast_1d(np.asarray(history, dtype=object)))
            if (hist < 0).any():
                bad = np.atleast_1d(np.asarray(history, dtype=object))[hist < 0][0]
                raise ModelError(f"unknown item id {bad!r} in the history")
        hist = np.unique(hist[hist != i])
        blocks = group_blocks(feats)
        best, sims = best_in_history(blocks, np.array([i]), hist)
        rows = [{"group": gb.group, "item": items.ids[best[g, 0]],
                 "similarity": float(sims[g, 0])}
                for g, gb in enumerate(blocks) if best[g, 0] >= 0]
        frame = pd.DataFrame(rows, columns=["group", "item", "similarity"])
        return frame.sort_values("similarity", ascending=False, kind="stable").reset_index(
            drop=True)


def _save_features(prefix: str, f: Features) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    arrays = {f"{prefix}_{k}": torch.from_numpy(v) for k, v in f.to_arrays().items()}
    return arrays, {f"{prefix}_names": f.names.tolist(), f"{prefix}_groups": f.groups.tolist()}


def _features_spec(prefix: str, extra: dict[str, Any], n_rows: int) -> StateSpec:
    """The saved feature matrix ``prefix`` (see :func:`_save_features`): one row per id,
    one column per name that ``extra`` lists (with a group each)."""
    names = extra_value(extra, f"{prefix}_names", STRINGS_RULE)
    groups = extra_value(extra, f"{prefix}_groups", STRINGS_RULE)
    if len(groups) != len(names):
        raise ModelError(f"meta.json: extra.{prefix}_groups holds {len(groups):,} groups for "
                         f"{len(names):,} feature names")
    return {prefix: CSR((n_rows, len(names)))}


def _load_features(prefix: str, ids: Any, state: dict[str, torch.Tensor],
                   extra: dict[str, Any]) -> Features:
    """The features saved by :func:`_save_features`, from state checked against
    :func:`_features_spec`."""
    arrays = {k: state[f"{prefix}_{k}"].numpy() for k in ("indptr", "indices", "data")}
    return Features.from_arrays(ids, arrays, extra[f"{prefix}_names"], extra[f"{prefix}_groups"])


class ContentBased(FeatureModelMixin, Recommender):
    """Content-based filtering by cosine between user and item feature profiles.

    Parameters
    ----------
    feature_weights:
        Weight per feature group, e.g. ``{"genres": 1.0, "tags": 2.0, "title": 0.5}``
        (groups not named weigh 1). Each group is scaled to unit length per item first,
        so a group's weight is its share of the profile whatever its number of columns.
    centered:
        With ratings, weight each history item by the rating minus the user's mean rating
        (a user whose ratings are all equal gets equal weights). Ignored for implicit
        feedback.
    popularity_weight:
        Adds ``popularity_weight * log(1 + count) / log(1 + max count)`` to every score
        to break ties between similar items in favour of the popular (0 = pure content).
    """

    name = "content"
    capabilities = Capabilities(uses_item_features=True, requires_item_features=True,
                                folds_in_history=True, similar_items=True)
    tuning_space = {"popularity_weight": ("float", 0.0, 1.0)}

    def __init__(self, feature_weights: dict[str, float] | None = None, centered: bool = True,
                 popularity_weight: float = 0.0) -> None:
        self.feature_weights = feature_weights
        self.centered = centered
        self.popularity_weight = popularity_weight

    def _validate_params(self) -> None:
        check_params(self, {"feature_weights": WEIGHTS_RULE, "centered": BOOL_RULE,
                            "popularity_weight": number_rule(0, MAX_NUMBER)})

    # ----------------------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self.item_features_ = options.item_features
        # Ratings are centred only when the training data has them: summed repeats of
        # implicit events (or play counts) are not ratings.
        self.rated_ = train.value is not None
        self._build_profiles()

    def _build_profiles(self) -> None:
        p = self.item_features_.normalized(self.feature_weights)
        norms = np.sqrt(np.asarray(p.multiply(p).sum(axis=1)).ravel())
        p = sp.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1), 0.0)
                     .astype(np.float32)) @ p
        self.profiles_ = p.tocsr().astype(np.float32)
        self._profiles_t = self.profiles_.T.tocsr()
        self.weights_ = self._weights(self.seen_, rated=self.rated_)
        pop = self.item_popularity_.astype(np.float64)
        self._pop_term = torch.from_numpy(
            (float(self.popularity_weight) * np.log1p(pop) / max(np.log1p(pop.max()), 1e-12))
            .astype(np.float32))

    def _weights(self, hist: sp.csr_matrix, rated: bool) -> sp.csr_matrix:
        """History weights: ratings centred per user, or ones for implicit data."""
        w = hist.tocsr().astype(np.float32, copy=True)
        if not (rated and self.centered and w.nnz and w.data.min() != w.data.max()):
            w.data[:] = 1.0
            return w
        counts = np.diff(w.indptr)
        sums = np.asarray(w.sum(axis=1)).ravel()
        means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        w.data -= np.repeat(means, counts).astype(np.float32)
        # A user whose ratings are all equal has no contrast: every item counts the same.
        spread = np.zeros(len(counts))
        np.add.at(spread, np.repeat(np.arange(len(counts)), counts), np.abs(w.data))
        flat = np.repeat(spread < 1e-6, counts)
        w.data[flat] = 1.0
        return w

    def _user_profiles(self, w: sp.csr_matrix) -> sp.csr_matrix:
        prof = (w @ self.profiles_).tocsr()
        norms = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
        return (sp.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1), 0.0)
                         .astype(np.float32)) @ prof).tocsr()

    def _scores_from_weights(self, w: sp.csr_matrix) -> torch.Tensor:
        prof = self._user_profiles(w).toarray()  # [B, n_features]
        dense = np.ascontiguousarray((self.profiles_ @ prof.T).T, dtype=np.float32)
        return torch.from_numpy(dense) + self._pop_term

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self._scores_from_weights(self.weights_[users.numpy()])

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        row = history_row(items, values, self.n_items, binary=values is None)
        rated = values is not None and self.rated_
        return self._scores_from_weights(self._weights(row, rated=rated)).ravel()

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        block = self.profiles_[items.numpy()] @ self._profiles_t
        return torch.from_numpy(np.asarray(block.toarray(), np.float32))

    # ----------------------------------------------------------------------------------
    def explain(self, user: Any, item: Any, n: int = 5) -> dict[str, Any]:
        """Why ``item`` scores as it does for ``user`` (external ids).

        Returns ``{"user", "item", "score", "items", "features"}``: ``items`` is a DataFrame
        of the history items that contributed most (``item, weight, similarity,
        contribution``; contributions sum to the score without the popularity term) and
        ``features`` the features shared by the user's profile and the item (``feature,
        group, contribution``).
        """
        self.check_fitted()
        u = int(self.users_.index([user])[0])
        i = int(self.items_.index([item])[0])
        if u < 0:
            raise ModelError(f"unknown user id {user!r}")
        if i < 0:
            raise ModelError(f"unknown item id {item!r}")
        w = self.weights_[u]
        prof = (w @ self.profiles_).toarray().ravel()
        norm = float(np.linalg.norm(prof))
        target = self.profiles_[i].toarray().ravel()
        if norm == 0:
            empty_items = pd.DataFrame(columns=["item", "weight", "similarity", "contribution"])
            empty_feats = pd.DataFrame(columns=["feature", "group", "contribution"])
            return {"user": user, "item": item, "score": 0.0, "items": empty_items,
                    "features": empty_feats}
        hist, hw = w.indices, w.data
        sims = np.asarray(self.profiles_[hist] @ target).ravel()
        contrib = hw * sims / norm
        order = np.argsort(-contrib, kind="stable")[:n]
        items = pd.DataFrame({"item": self.items_.ids[hist[order]], "weight": hw[order],
                              "similarity": sims[order], "contribution": contrib[order]})
        fc = prof * target / norm
        nz = np.flatnonzero(fc)
        forder = nz[np.argsort(-fc[nz], kind="stable")][:n]
        feats = pd.DataFrame({"feature": self.item_features_.names[forder],
                              "group": self.item_features_.groups[forder],
                              "contribution": fc[forder]})
        return {"user": user, "item": item, "score": float(fc.sum()), "items": items,
                "features": feats}

    # ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        arrays, _ = _save_features("item_features", self.item_features_)
        return arrays

    def _extra(self) -> dict[str, Any]:
        return {**_save_features("item_features", self.item_features_)[1],
                "rated": bool(self.rated_)}

    scoring_params = {"feature_weights": WEIGHTS_RULE, "popularity_weight": number_rule(0)}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        return _features_spec("item_features", extra, self.n_items)

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.item_features_ = _load_features("item_features", self.items_, state, extra)
        # Models saved before "rated" was stored centred whenever the values differed.
        self.rated_ = extra_value(extra, "rated", BOOL_RULE, True)
        self._build_profiles()
