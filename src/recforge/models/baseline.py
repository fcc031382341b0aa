"""Baseline estimates for ratings (Koren 2010): ``b_ui = mu + b_u + b_i``.

``baseline`` is Surprise's ``BaselineOnly``: the global mean plus a user and an item bias,
fitted by alternating least squares (``method="als"``, Surprise's default: ``reg_u=15``,
``reg_i=10``, 10 epochs) or by stochastic gradient descent (``method="sgd"``). Every
epoch is a few ``numpy.bincount`` passes over the ratings (ALS) or over minibatches (SGD),
never a Python loop over ratings.

:func:`fit_biases` is shared with ``knnbaseline`` (its residuals are taken from these
baselines), and :class:`RatingModel` holds what the three Surprise-style rating models
(``baseline``, ``knnbaseline`` and through its own module ``svdpp``) share: the global
mean, the rating range and the biases, saved and checked on load, and the fallback for
pairs with an unknown user or item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import DataError, ModelError
from recforge.models.artifact import Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    MAX_COUNT,
    MAX_EPOCHS,
    MAX_NUMBER,
    RANGE_RULE,
    check_params,
    choice_rule,
    extra_value,
    int_rule,
    number_rule,
    optional_rule,
    positive_rule,
)


def rating_columns(train: Interactions, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, ratings)`` of ``train`` as int64 / int64 / float64 arrays;
    :class:`DataError` when it has no rating values."""
    if train.value is None:
        raise DataError(f"{model} predicts ratings and needs rating values; for implicit "
                        "feedback use 'als', 'ease' or another ranking model",
                        source=train.source)
    return (np.asarray(train.user, dtype=np.int64), np.asarray(train.item, dtype=np.int64),
            np.asarray(train.value, dtype=np.float64))


def fit_biases(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int,
               n_items: int, *, method: str = "als", epochs: int = 10, reg_u: float = 15.0,
               reg_i: float = 10.0, reg: float = 0.02, learning_rate: float = 0.005,
               batch_size: int = 256, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """The global mean and the user and item biases of Koren's baseline estimates.

    ``als``: each epoch sets every item's bias to
    ``sum_{u in U(i)} (r_ui - mu - b_u) / (reg_i + |U(i)|)``, then every user's to
    ``sum_{i in I(u)} (r_ui - mu - b_i) / (reg_u + |I(u)|)`` (Surprise's order and
    regularisation). ``sgd``: each epoch visits the ratings in a seeded random order in
    minibatches of ``batch_size`` and steps ``b += lr * (sum of the batch's errors - reg *
    count * b)`` for the batch's users and items (``batch_size=1`` is Surprise's SGD).
    """
    mu = float(ratings.mean())
    bu = np.zeros(n_users)
    bi = np.zeros(n_items)
    if method == "als":
        n_u = np.bincount(users, minlength=n_users)
        n_i = np.bincount(items, minlength=n_items)
        for _ in range(epochs):
            bi = np.bincount(items, ratings - mu - bu[users], minlength=n_items) / (reg_i + n_i)
            bu = np.bincount(users, ratings - mu - bi[items], minlength=n_users) / (reg_u + n_u)
        return mu, bu, bi
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence: refused below
        for _ in range(epochs):
            order = rng.permutation(len(ratings))
            for start in range(0, len(order), batch_size):
                b = order[start:start + batch_size]
                u, i = users[b], items[b]
                err = ratings[b] - mu - bu[u] - bi[i]
                gu = np.bincount(u, err, minlength=n_users) - reg * np.bincount(
                    u, minlength=n_users) * bu
                gi = np.bincount(i, err, minlength=n_items) - reg * np.bincount(
                    i, minlength=n_items) * bi
                bu += learning_rate * gu
                bi += learning_rate * gi
    if not (np.isfinite(bu).all() and np.isfinite(bi).all()):
        raise ModelError(f"the SGD of the biases diverged (learning_rate={learning_rate}, "
                         f"reg={reg}, batch_size={batch_size}); lower learning_rate or reg, "
                         "or use method='als'")
    return mu, bu, bi


class RatingModel(Recommender):
    """What the Surprise-style rating models share: ``mean_``, ``rating_range_``,
    ``user_bias_`` / ``item_bias_`` (float32 arrays), the baseline ``b_ui`` of any pair,
    known or not (:meth:`_fallback_index`), and their saving and checking."""

    def _fit_baseline(self, train: Interactions) -> None:
        """Fit the baseline estimates with the model's own ``method``, ``epochs``,
        ``reg_u``, ``reg_i``, ``reg``, ``learning_rate``, ``batch_size`` and ``seed`` (the
        hyperparameters ``baseline`` and ``knnbaseline`` share) and keep them."""
        users, items, ratings = rating_columns(train, self.name)
        p: Any = self
        mu, bu, bi = fit_biases(
            users, items, ratings, len(train.users), len(train.items), method=p.method,
            epochs=baseline_epochs(p.method, p.epochs), reg_u=float(p.reg_u),
            reg_i=float(p.reg_i), reg=float(p.reg), learning_rate=float(p.learning_rate),
            batch_size=int(p.batch_size), seed=int(p.seed))
        self._set_baseline(train, mu, bu, bi)

    def _set_baseline(self, train: Interactions, mu: float, bu: np.ndarray,
                      bi: np.ndarray) -> None:
        self.mean_ = float(mu)
        value = np.asarray(train.value)
        self.rating_range_ = (float(value.min()), float(value.max()))
        self.user_bias_ = bu.astype(np.float32)
        self.item_bias_ = bi.astype(np.float32)

    def _baseline_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``mu + b_u + b_i`` (float64) for index pairs; a ``-1`` index adds no bias."""
        bu = np.where(users >= 0, self.user_bias_[np.maximum(users, 0)], 0.0)
        bi = np.where(items >= 0, self.item_bias_[np.maximum(items, 0)], 0.0)
        return self.mean_ + bu.astype(np.float64) + bi.astype(np.float64)

    def _fallback_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs with an unknown user or item (``-1``): the global mean plus the bias of
        whichever of the two is known, clipped to the rating range."""
        return np.clip(self._baseline_pairs(users, items), *self.rating_range_).astype(
            np.float32)

    def _baseline_state(self) -> dict[str, torch.Tensor]:
        return {"user_bias": torch.from_numpy(self.user_bias_),
                "item_bias": torch.from_numpy(self.item_bias_)}

    def _baseline_spec(self) -> StateSpec:
        return {"user_bias": Array((self.n_users,)), "item_bias": Array((self.n_items,))}

    def _extra(self) -> dict[str, Any]:
        return {"mean": self.mean_, "rating_range": list(self.rating_range_)}

    def _restore_baseline(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.mean_ = float(extra_value(extra, "mean", number_rule()))
        lo, hi = extra_value(extra, "rating_range", RANGE_RULE)
        self.rating_range_ = (float(lo), float(hi))
        self.user_bias_ = state["user_bias"].numpy().astype(np.float32)
        self.item_bias_ = state["item_bias"].numpy().astype(np.float32)


#: The rules of the baseline estimates' hyperparameters (``baseline`` and ``knnbaseline``).
BASELINE_RULES = {"method": choice_rule("als", "sgd"),
                  "epochs": optional_rule(int_rule(1, MAX_EPOCHS)),
                  "reg_u": number_rule(0, MAX_NUMBER), "reg_i": number_rule(0, MAX_NUMBER),
                  "reg": number_rule(0, MAX_NUMBER), "learning_rate": positive_rule(),
                  "batch_size": int_rule(1, MAX_COUNT)}


def baseline_epochs(method: str, epochs: int | None) -> int:
    """``epochs``, or Surprise's default for the method (ALS 10, SGD 20)."""
    if epochs is not None:
        return int(epochs)
    return 10 if method == "als" else 20


class Baseline(RatingModel):
    """Baseline estimates ``r_ui ~ mu + b_u + b_i`` (Surprise's ``BaselineOnly``).

    Parameters
    ----------
    method: ``"als"`` (default) or ``"sgd"``.
    epochs: passes (default: 10 for ALS, 20 for SGD, as in Surprise).
    reg_u, reg_i: ALS's L2 weights of the user and item biases (15 and 10).
    reg, learning_rate, batch_size: SGD's L2 weight (0.02), step (0.005) and ratings per
        step (256; 1 is Surprise's per-rating SGD).
    seed: SGD's visiting order.

    ``predict`` clips to the training rating range; for ranking every user gets the same
    order (by item bias), so the model is not personalised.
    """

    name = "baseline"
    capabilities = Capabilities(rates=True, learns_ratings=True, personalized=False,
                                seeded=True)
    tuning_space = {"reg_u": ("log", 1.0, 50.0), "reg_i": ("log", 1.0, 50.0)}

    def __init__(self, method: str = "als", epochs: int | None = None, reg_u: float = 15.0,
                 reg_i: float = 10.0, reg: float = 0.02, learning_rate: float = 0.005,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.method = method
        self.epochs = epochs
        self.reg_u = reg_u
        self.reg_i = reg_i
        self.reg = reg
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed

    def _validate_params(self) -> None:
        check_params(self, {**BASELINE_RULES, "seed": int_rule(0, 2**63 - 1)})

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._fit_baseline(train)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        u = users.numpy()
        scores = (self.mean_ + self.user_bias_[u][:, None].astype(np.float64)
                  + self.item_bias_[None, :].astype(np.float64))
        return torch.from_numpy(scores.astype(np.float32))

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._fallback_index(users, items)

    def _state(self):
        return self._baseline_state()

    def _state_spec(self, extra) -> StateSpec:
        return self._baseline_spec()

    def _restore(self, state, extra):
        self._restore_baseline(state, extra)


__all__ = ["Baseline", "RatingModel", "fit_biases", "rating_columns"]
