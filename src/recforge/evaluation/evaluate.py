"""Evaluate a fitted model on held-out interactions.

The default protocol is **full ranking**: for every test user, every catalogue item is
scored, the user's training items are excluded, and the top K is compared with the user's
held-out items. This is what a deployed recommender does, and the only protocol whose
numbers mean what they say.

The **sampled** protocol (each held-out item ranked against ``n_negatives`` random items
the user never interacted with, as in the NCF paper) is available for comparison with
papers that use it. Its metrics are labelled ``(sampled 1+N)``: they are much higher than
full-ranking figures and can even order models differently (Krichene & Rendle, KDD 2020).

Scoring is batched over users (memory-bounded blocks, ``torch.topk``); metrics are
computed on the whole hit matrix at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.data.sampling import positive_keys, sample_negatives
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError
from recforge.evaluation import metrics as M
from recforge.evaluation.metrics import Metric, parse_metrics
from recforge.ranking import random_ties, top_k

log = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "RankingModel", "evaluate", "bootstrap_ci"]


class RankingModel(Protocol):
    """What the evaluation needs from a fitted model (every recforge ``Recommender`` has
    it): its vocabularies, training events and item popularity, batched scores over
    internal user indices, and for rating metrics predicted ratings of index pairs."""

    users_: Vocabulary
    items_: Vocabulary
    #: training events, users x items: excluded from rankings when no ``train`` is given
    seen_: sp.csr_matrix
    #: training users per item (popularity metrics)
    item_popularity_: np.ndarray

    @property
    def name(self) -> str: ...

    @property
    def predicts_ratings(self) -> bool: ...

    @property
    def n_users(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    def check_fitted(self) -> None:
        """Raise unless the model is fitted."""

    def score(self, users: Any, items: Any = None) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for internal user indices (higher: better)."""

    def score_block_size(self, batch_size: int | None = None) -> int:
        """Users to score at once (``batch_size`` when given)."""

    def predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for pairs of internal indices."""


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, (1 << 22) // max(1, len(v)))
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        means[s:e] = v[rng.integers(0, len(v), size=(e - s, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass
class EvaluationResult:
    """Mean metrics, per-user values and what was evaluated."""

    summary: dict[str, float]
    per_user: pd.DataFrame
    protocol: str
    n_users: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, label: str) -> float:
        return self.summary[label]

    def confidence_intervals(self, *, n_boot: int = 1000, level: float = 0.95,
                             seed: int = 0) -> dict[str, tuple[float, float]]:
        """Bootstrap CI of each per-user metric's mean."""
        return {c: bootstrap_ci(self.per_user[c].to_numpy(), n_boot=n_boot, level=level,
                                seed=seed)
                for c in self.per_user.columns if c in self.summary}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"metric": list(self.summary), "value": list(self.summary.values())})

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={v:.4f}" for k, v in self.summary.items())
        return f"EvaluationResult({self.protocol}, users={self.n_users}, {vals})"


class NothingToEvaluate(DataError):
    """No test user is known to the model (a rank of a distributed validation may hold
    only such users: it then contributes nothing)."""


def _to_model_space(model: RankingModel, data: Interactions
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Map events into the model's vocabularies: (user idx, item idx, values); -1 = unknown."""
    u_map = model.users_.index(data.users.ids)
    i_map = model.items_.index(data.items.ids)
    return u_map[data.user], i_map[data.item], data.value


@dataclass
class _Held:
    """The test events in the model's indices: users (-1: unknown to the model, or
    without a training event), items (-1: unknown), values, and each event's user in the
    test's own vocabulary (for notes)."""

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray | None
    test_user: np.ndarray

    def take(self, keep: np.ndarray) -> _Held:
        return _Held(self.user[keep], self.item[keep],
                     self.value[keep] if self.value is not None else None,
                     self.test_user[keep])


def evaluate(model: RankingModel, train: Interactions | None, test: Interactions, *,
             metrics: str | Sequence[str | Metric] = ("recall@20", "ndcg@20"),
             protocol: Literal["full", "sampled"] = "full", n_negatives: int = 100,
             exclude_seen: bool = True, batch_size: int | None = None,
             candidates: Any = None, seed: int = 0) -> EvaluationResult:
    """Evaluate ``model`` on ``test``.

    Parameters
    ----------
    train:
        The interactions whose items are excluded from each user's ranking (normally the
        model's training data). ``None`` uses the data the model was fitted on.
    test:
        Held-out interactions. Every test event counts as a relevant item of its user
        (for implicit feedback; filter ratings into positives first with
        :func:`recforge.data.filters.to_implicit` if needed). Users unknown to the model
        are skipped (counted in ``notes``); items unknown to the model stay relevant but can
        never be retrieved, so they lower recall honestly.
    metrics:
        Labels such as ``"ndcg@10"``, ``"recall@20"``, ``"map@10"``, ``"mrr@10"``,
        ``"hit_rate@10"``, ``"precision@10"``, ``"coverage@10"``, ``"arp@10"``,
        ``"gini@10"``, ``"novelty@10"``, ``"rmse"``, ``"mae"``.
    protocol:
        ``"full"`` (default) or ``"sampled"`` (1 held-out item vs ``n_negatives``).
    candidates:
        External item ids to rank among (full protocol), e.g. the held-out items of a
        cold-start split; test events of other items are left out (counted in ``notes``).
    seed:
        Draws the sampled protocol's negatives, and the full protocol's order among tied
        scores (random, not by item index: a model that scores items alike gets what chance
        gives, not the lowest ids).
    """
    model.check_fitted()
    start = time.perf_counter()
    mets = parse_metrics(metrics) if not isinstance(metrics, list) or not all(
        isinstance(m, Metric) for m in metrics) else metrics
    if protocol not in ("full", "sampled"):
        raise ConfigError(f"protocol must be 'full' or 'sampled', not {protocol!r}")
    if len(test) == 0:
        raise DataError("the test set is empty", source=test.source)
    notes: list[str] = []
    held, cand_idx = _held_out(model, test, candidates, protocol, notes)
    unknown_user, unknown_item = _mark_unknown(model, train, test, held, notes)
    exclude = _excluded(model, train) if exclude_seen else None

    summary: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    ranking = [m for m in mets if m.kind in ("ranking", "lists")]
    rating = [m for m in mets if m.kind == "rating"]
    users_out = np.empty(0, dtype=np.int64)
    if ranking and protocol == "full":
        users_out = _full_metrics(model, held, ~unknown_user, ~unknown_item, exclude, ranking,
                                  batch_size, cand_idx, seed, summary, per_user)
    elif ranking and protocol == "sampled":
        if any(m.kind == "lists" for m in ranking):
            raise ConfigError("coverage / ARP / Gini / novelty need the full protocol")
        ok = ~unknown_user & ~unknown_item
        users_out, values = _sampled(model, held.user[ok], held.item[ok], exclude, ranking,
                                     n_negatives, seed)
        for m in ranking:
            label = f"{m.label} (sampled 1+{n_negatives})"
            per_user[label] = values[m.label]
            summary[label] = float(values[m.label].mean()) if len(users_out) else 0.0
    if rating:
        _rating_metrics(model, held, ~unknown_user & ~unknown_item, rating, test, summary,
                        notes)

    frame = pd.DataFrame({"user": model.users_.ids[users_out]} if len(users_out) or per_user
                         else {"user": []})
    for label, vals in per_user.items():
        frame[label] = vals
    seconds = time.perf_counter() - start
    for n in notes:
        log.info(n)
    return EvaluationResult(summary=summary, per_user=frame, protocol=protocol,
                            n_users=len(users_out), seconds=seconds, notes=notes)


def _held_out(model: RankingModel, test: Interactions, candidates: Any, protocol: str,
              notes: list[str]) -> tuple[_Held, np.ndarray | None]:
    """The test events in the model's indices, each (user, item) pair once and only those
    of candidate items, with the candidates' indices (None: every item)."""
    tu, ti, tv = _to_model_space(model, test)
    held = _Held(tu, ti, tv, test.user.copy())
    # A (user, item) pair held out twice (test files joined, a log with repeats) is one
    # relevant item: counted twice it would cap the user's recall at 1/2.
    pair = test.user.astype(np.int64) * max(1, test.n_items) + test.item
    _, first = np.unique(pair, return_index=True)
    if len(first) < len(pair):
        notes.append(f"{len(pair) - len(first)} repeated test events (the same user and "
                     "item) were counted once")
        first.sort()
        held = held.take(first)
    if candidates is None:
        return held, None
    if protocol != "full":
        raise ConfigError("candidates work with the full protocol")
    cand_idx = model.items_.index(candidates)
    if (cand_idx < 0).any():
        bad = np.atleast_1d(np.asarray(candidates, dtype=object))[cand_idx < 0]
        raise ConfigError(f"{len(bad)} candidate item id(s) unknown to the model, e.g. "
                          f"{bad[:5].tolist()}")
    cand_idx = np.unique(cand_idx)
    inside = np.isin(held.item, cand_idx)
    if not inside.all():
        notes.append(f"{int((~inside).sum())} test events of items outside the "
                     "candidates were left out")
        held = held.take(inside)
    if len(held.user) == 0:
        raise DataError("no test event is of a candidate item", source=test.source)
    return held, cand_idx


def _mark_unknown(model: RankingModel, train: Interactions | None, test: Interactions,
                  held: _Held, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which test events are of users the model cannot rank for, and which of items it
    does not know; such users' index set to -1 in ``held``."""
    tu, tid = held.user, held.test_user
    # A user in the model's vocabulary without a training event (a test file's new user,
    # when train and test files were read into one vocabulary) is unknown to it all the
    # same: ranked from an empty history, they would score what popularity or chance gives.
    # (judged on ``train`` when given: an experiment passes every rating, so that models
    # trained on the positives only and rating models are scored on the same users)
    if train is None:
        has_events = np.diff(model.seen_.indptr) > 0
    else:
        tr_users = model.users_.index(train.users.ids[np.unique(train.user)])
        has_events = np.zeros(model.n_users, dtype=bool)
        has_events[tr_users[tr_users >= 0]] = True
    no_history = (tu >= 0) & ~has_events[np.maximum(tu, 0)]
    if no_history.any():
        notes.append(f"{len(np.unique(tid[no_history]))} test users without a training "
                     "event were skipped (as users unknown to the model)")
    unknown_user = (tu < 0) | no_history
    if unknown_user.all():
        raise NothingToEvaluate(f"none of the {len(np.unique(tid))} test users is known to "
                                "the model (a test file in another id space, or a split "
                                "whose users are all new?); nothing can be evaluated",
                                source=test.source)
    if (tu < 0).any():
        notes.append(f"{int((tu < 0).sum())} test events of {len(np.unique(tid[tu < 0]))} "
                     "users unknown to the model were skipped")
    held.user = np.where(no_history, -1, tu)
    unknown_item = (held.item < 0) & ~unknown_user
    if unknown_item.any():
        notes.append(f"{int(unknown_item.sum())} test events are of items unknown to the "
                     "model: they count as relevant but cannot be recommended")
    return unknown_user, unknown_item


def _excluded(model: RankingModel, train: Interactions | None) -> sp.csr_matrix:
    """The items excluded from each user's ranking: ``train``'s in the model's indices,
    or the model's training events."""
    if train is None:
        exclude = model.seen_
    else:
        ru, ri, _ = _to_model_space(model, train)
        ok = (ru >= 0) & (ri >= 0)
        exclude = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (ru[ok], ri[ok])),
                                shape=(model.n_users, model.n_items))
    exclude = exclude.tocsr()
    exclude.sort_indices()
    return exclude


def _full_metrics(model: RankingModel, held: _Held, known: np.ndarray, known_item: np.ndarray,
                  exclude: sp.csr_matrix | None, ranking: list[Metric],
                  batch_size: int | None, cand_idx: np.ndarray | None, seed: int,
                  summary: dict[str, float], per_user: dict[str, np.ndarray]) -> np.ndarray:
    """The full protocol's ranking and list metrics, into ``summary`` / ``per_user``;
    returns the users evaluated."""
    n_users, n_items = model.n_users, model.n_items
    tu, ti = held.user, held.item
    n_rel = np.bincount(tu[known], minlength=n_users)
    ok = known & known_item
    relevant = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (tu[ok], ti[ok])),
                             shape=(n_users, n_items))
    relevant.sum_duplicates()
    eval_users = np.flatnonzero(n_rel > 0)
    kmax = max(m.k for m in ranking)
    hits, recs = _full_ranking(model, eval_users, relevant, exclude, kmax, batch_size,
                               cand_idx, seed)
    nr = n_rel[eval_users]
    pop_share = model.item_popularity_ / max(1, n_users)
    for m in ranking:
        if m.kind == "ranking":
            vals = M.RANKING[m.name][0](hits, nr, m.k)
            per_user[m.label] = vals
            summary[m.label] = float(vals.mean()) if len(vals) else 0.0
            continue
        r = recs[:, : m.k]
        if m.name == "coverage":
            summary[m.label] = M.coverage(r, n_items)
        elif m.name == "gini":
            summary[m.label] = M.gini(r, n_items)
        elif m.name in ("arp", "novelty"):
            fn = M.average_popularity if m.name == "arp" else M.novelty
            vals = fn(r, pop_share)
            per_user[m.label] = vals
            summary[m.label] = float(vals.mean())
    return eval_users


def _rating_metrics(model: RankingModel, held: _Held, ok: np.ndarray, rating: list[Metric],
                    test: Interactions, summary: dict[str, float], notes: list[str]) -> None:
    """RMSE / MAE of the predicted ratings of the test events of known users and items."""
    if not model.predicts_ratings:
        raise ConfigError(f"{', '.join(m.label for m in rating)} need a rating model; "
                          f"{model.name!r} does not predict ratings")
    if held.value is None:
        raise DataError("RMSE / MAE need ratings in the test data", source=test.source)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} test ratings of unknown users/items were not "
                     "predicted")
    pred = model.predict_index(held.user[ok], held.item[ok])
    for m in rating:
        fn = M.rmse if m.name == "rmse" else M.mae
        summary[m.label] = fn(pred, held.value[ok])


def _full_ranking(model: RankingModel, users: np.ndarray, relevant: sp.csr_matrix,
                  exclude: sp.csr_matrix | None, k: int, batch_size: int | None,
                  candidates: np.ndarray | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix ``[n, k]`` and recommended item indices ``[n, k]`` (-1 for empty slots).

    Tied scores are taken and ordered at random for each user (``seed``): by item index, a
    model that scores many items alike (a constant, popularity on cold items) would get
    whatever the lowest ids hold, often the oldest and most popular items.
    """
    hits = np.zeros((len(users), k), dtype=bool)
    recs = np.full((len(users), k), -1, dtype=np.int64)
    rel = relevant.tocsr()
    n_items = model.n_items
    block = model.score_block_size(batch_size)
    for pos in range(0, len(users), block):
        ub = users[pos:pos + block]
        items, scores = top_k(model.score, ub, k, n_items, exclude=exclude,
                              candidates=candidates,
                              ties=random_ties(torch.from_numpy(ub), n_items, seed))
        b, kk = items.shape
        it = items.numpy()
        valid = torch.isfinite(scores).numpy()
        # Membership of each recommended item in the user's relevant set.
        dense = torch.from_numpy(rel[ub].toarray() > 0)
        h = torch.gather(dense, 1, items).numpy() & valid
        hits[pos:pos + b, :kk] = h
        recs[pos:pos + b, :kk] = np.where(valid, it, -1)
    return hits, recs


def _sampled(model: RankingModel, users: np.ndarray, items: np.ndarray,
             exclude: sp.csr_matrix | None, mets: list[Metric], n_negatives: int, seed: int
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """Rank each held-out (user, item) against ``n_negatives`` sampled items; per-user means."""
    if n_negatives < 1:
        raise ConfigError("n_negatives must be >= 1")
    n_users, n_items = model.n_users, model.n_items
    pos_mat = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)),
                            shape=(n_users, n_items))
    if exclude is not None:
        pos_mat = pos_mat + exclude
    pos_mat = pos_mat.tocsr()
    pos_mat.sort_indices()
    keys = positive_keys(pos_mat)
    rng = np.random.default_rng(seed)
    negs = sample_negatives(pos_mat, users, n_negatives, rng=rng, keys=keys)
    ranks = np.empty(len(users), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    block = model.score_block_size(None)
    for s in range(0, len(order), block):
        sel = order[s:s + block]
        ub = users[sel]
        uniq, inv = np.unique(ub, return_inverse=True)
        scores = model.score(uniq)[torch.from_numpy(inv)]
        pos_s = scores.gather(1, torch.from_numpy(items[sel])[:, None])
        neg_s = scores.gather(1, torch.from_numpy(negs[sel]))
        # Ties count against the model: a constant scorer gets the worst rank.
        ranks[sel] = (neg_s >= pos_s).sum(dim=1).numpy()
    values: dict[str, Any] = {}
    uniq_users, inv = np.unique(users, return_inverse=True)
    counts = np.bincount(inv)
    for m in mets:
        hit = ranks < m.k
        if m.name in ("hit_rate", "recall"):
            case = hit.astype(np.float64)
        elif m.name == "ndcg":
            case = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        elif m.name in ("mrr", "map"):
            case = np.where(hit, 1.0 / (ranks + 1.0), 0.0)
        elif m.name == "precision":
            case = hit / m.k
        else:  # pragma: no cover - parse_metrics rejects others
            raise ConfigError(f"{m.label} is not defined for the sampled protocol")
        values[m.label] = np.bincount(inv, weights=case) / counts
    return uniq_users, values
