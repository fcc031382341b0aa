"""Evaluation metrics as small pure functions.

Ranking metrics take a *hit matrix*: ``hits[u, r]`` is True when the item a model put at
rank ``r + 1`` for user ``u`` is one of the user's relevant (held-out) items; ``n_relevant[u]``
is how many relevant items the user has (including any the model could not rank). Each
returns one value per user; the reported figure is the mean over users with
``n_relevant > 0``. With ``K`` the cutoff and ``R_u`` the relevant set:

=================  =================================================================
``Precision@K``    ``hits in top K / K``
``Recall@K``       ``hits in top K / |R_u|``
``NDCG@K``         ``DCG / IDCG``, ``DCG = sum_{r<=K} hit_r / log2(r + 1)``, ideal DCG
                   over ``min(K, |R_u|)`` hits (binary relevance)
``MAP@K``          ``sum_{r<=K} hit_r * Precision@r / min(K, |R_u|)``
``MRR@K``          ``1 / rank of the first hit`` (0 when none in the top K)
``HitRate@K``      ``1`` when any relevant item is in the top K
=================  =================================================================

Beyond accuracy (over the recommendation lists of all evaluated users):
``Coverage@K`` the fraction of the catalogue recommended to anyone; ``ARP@K`` the mean
training popularity (share of training users) of recommended items; ``Gini@K`` the Gini
index of how often each catalogue item is recommended (0 = perfectly even, 1 = one item);
``Novelty@K`` the mean self-information ``-log2(popularity share)`` of recommended items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from recforge.errors import ConfigError

__all__ = [
    "Metric",
    "parse_metrics",
    "precision",
    "recall",
    "ndcg",
    "average_precision",
    "reciprocal_rank",
    "hit_rate",
    "rmse",
    "mae",
    "coverage",
    "average_popularity",
    "gini",
    "novelty",
]


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _prep(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise ValueError("hits must be a 2-d [users, ranks] matrix")
    if k < 1:
        raise ValueError("k must be >= 1")
    return hits[:, :k], np.asarray(n_relevant, dtype=np.float64)


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Precision@k per user."""
    h, _ = _prep(hits, n_relevant, k)
    return h.sum(axis=1) / k


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@k per user (0 for users with no relevant items)."""
    h, n = _prep(hits, n_relevant, k)
    return np.divide(h.sum(axis=1), n, out=np.zeros(len(n)), where=n > 0)


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per user with binary relevance; ideal DCG over ``min(k, n_relevant)`` hits."""
    h, n = _prep(hits, n_relevant, k)
    disc = _discounts(k)
    dcg = (h * disc[: h.shape[1]]).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(n, k).astype(np.int64)]
    return np.divide(dcg, idcg, out=np.zeros(len(n)), where=idcg > 0)


def average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per user, normalised by ``min(k, n_relevant)``."""
    h, n = _prep(hits, n_relevant, k)
    ranks = np.arange(1, h.shape[1] + 1)
    prec_at = np.cumsum(h, axis=1) / ranks
    denom = np.minimum(n, k)
    return np.divide((prec_at * h).sum(axis=1), denom, out=np.zeros(len(n)), where=denom > 0)


def reciprocal_rank(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first hit within the top k (0 when none)."""
    h, _ = _prep(hits, n_relevant, k)
    any_hit = h.any(axis=1)
    first = np.argmax(h, axis=1)
    return np.where(any_hit, 1.0 / (first + 1), 0.0)


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """1 when a relevant item is within the top k, else 0."""
    h, _ = _prep(hits, n_relevant, k)
    return h.any(axis=1).astype(np.float64)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error."""
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean((p - a) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error."""
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    return float(np.mean(np.abs(p - a)))


def _valid_items(rec_items: np.ndarray) -> np.ndarray:
    r = np.asarray(rec_items)
    return r[r >= 0]


def coverage(rec_items: np.ndarray, n_items: int) -> float:
    """Fraction of the catalogue that appears in at least one list (``-1`` = empty slot)."""
    return float(len(np.unique(_valid_items(rec_items))) / n_items) if n_items else 0.0


def average_popularity(rec_items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Per list: mean popularity of its items (``popularity`` as a share of users)."""
    r = np.asarray(rec_items)
    pop = np.asarray(popularity, dtype=np.float64)
    vals = np.where(r >= 0, pop[np.maximum(r, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.nanmean(vals, axis=1)) if r.size else np.zeros(len(r))


def novelty(rec_items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Per list: mean self-information ``-log2(p_i)`` of its items (``p_i`` a share in (0, 1])."""
    r = np.asarray(rec_items)
    pop = np.clip(np.asarray(popularity, dtype=np.float64), 1e-12, 1.0)
    info = -np.log2(pop)
    vals = np.where(r >= 0, info[np.maximum(r, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.nanmean(vals, axis=1)) if r.size else np.zeros(len(r))


def gini(rec_items: np.ndarray, n_items: int) -> float:
    """Gini index of recommendation counts over all ``n_items`` catalogue items."""
    counts = np.bincount(_valid_items(rec_items).astype(np.int64), minlength=n_items)
    counts = np.sort(counts.astype(np.float64))
    total = counts.sum()
    if total == 0 or n_items == 0:
        return 0.0
    idx = np.arange(1, n_items + 1)
    return float(((2 * idx - n_items - 1) * counts).sum() / (n_items * total))


RANKING = {
    "precision": (precision, "Precision"),
    "recall": (recall, "Recall"),
    "ndcg": (ndcg, "NDCG"),
    "map": (average_precision, "MAP"),
    "mrr": (reciprocal_rank, "MRR"),
    "hit_rate": (hit_rate, "HitRate"),
}
RATING = {"rmse": "RMSE", "mae": "MAE"}
LISTS = {"coverage": "Coverage", "arp": "ARP", "gini": "Gini", "novelty": "Novelty"}
_ALIASES = {"hr": "hit_rate", "hitrate": "hit_rate", "hit": "hit_rate", "p": "precision",
            "prec": "precision", "r": "recall", "ap": "map", "rr": "mrr",
            "cov": "coverage", "popularity": "arp"}


#: Largest cutoff ``@K``: evaluation holds a ``users x K`` table of hits and items.
MAX_CUTOFF = 1000


@dataclass(frozen=True)
class Metric:
    """A metric and its cutoff, e.g. ``Metric("ndcg", 10)`` labelled ``NDCG@10``."""

    name: str
    k: int | None = None

    @property
    def kind(self) -> str:
        if self.name in RANKING:
            return "ranking"
        if self.name in RATING:
            return "rating"
        return "lists"

    @property
    def label(self) -> str:
        title = {**{n: t for n, (_, t) in RANKING.items()}, **RATING, **LISTS}[self.name]
        return f"{title}@{self.k}" if self.k is not None else title

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, spec: str) -> Metric:
        """``"ndcg@10"``, ``"Recall@20"``, ``"rmse"``, ``"coverage@10"``."""
        if not isinstance(spec, str):
            raise ConfigError(f"a metric is a name such as 'ndcg@10', not a "
                              f"{type(spec).__name__}")
        shown = repr(spec if len(spec) <= 40 else spec[:40] + "...")
        m = re.fullmatch(r"\s*([A-Za-z_]+)\s*(?:@\s*([0-9]+))?\s*", spec)
        if not m:
            raise ConfigError(f"cannot parse metric {shown}; expected e.g. 'ndcg@10' or 'rmse'")
        name = m.group(1).lower()
        name = _ALIASES.get(name, name)
        digits = m.group(2)
        if digits and (len(digits) > 9 or int(digits) > MAX_CUTOFF):  # the lists are k long
            raise ConfigError(f"metric {shown}: the cutoff must be at most {MAX_CUTOFF:,}")
        k = int(digits) if digits else None
        if name in RANKING or name in LISTS:
            if k is None or k < 1:
                raise ConfigError(f"metric {shown} needs a cutoff, e.g. '{name}@10'")
        elif name in RATING:
            if k is not None:
                raise ConfigError(f"metric {shown} takes no cutoff")
        else:
            known = sorted([*RANKING, *RATING, *LISTS])
            raise ConfigError(f"unknown metric {shown}; known: {', '.join(known)}")
        return cls(name, k)


def parse_metrics(specs: str | list[str] | tuple[str, ...]) -> list[Metric]:
    """Parse ``"ndcg@10,recall@20"`` or a list of such strings / :class:`Metric` objects."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    out = [s if isinstance(s, Metric) else Metric.parse(s) for s in specs]
    if not out:
        raise ConfigError("no metrics given")
    return out
