"""Metrics against values worked out by hand, plus Hypothesis range properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recforge import ConfigError
from recforge.evaluation import metrics as M
from recforge.evaluation.metrics import Metric, parse_metrics

# One user, relevant items at ranks 1 and 3 of a top-4 list, 3 relevant items in all.
HITS = np.array([[True, False, True, False]])
NREL = np.array([3])


def test_precision_recall_by_hand():
    assert M.precision(HITS, NREL, 4)[0] == pytest.approx(2 / 4)
    assert M.precision(HITS, NREL, 2)[0] == pytest.approx(1 / 2)
    assert M.recall(HITS, NREL, 4)[0] == pytest.approx(2 / 3)
    assert M.recall(HITS, NREL, 1)[0] == pytest.approx(1 / 3)


def test_ndcg_by_hand():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # min(4, 3) = 3 ideal hits
    assert M.ndcg(HITS, NREL, 4)[0] == pytest.approx(dcg / idcg)
    # At k=2 the ideal has 2 hits: 1 + 1/log2(3); the list has 1 hit at rank 1.
    assert M.ndcg(HITS, NREL, 2)[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_map_mrr_hit_rate_by_hand():
    # AP@4 = (P@1 * 1 + P@3 * 1) / min(4, 3) = (1 + 2/3) / 3
    assert M.average_precision(HITS, NREL, 4)[0] == pytest.approx((1 + 2 / 3) / 3)
    assert M.reciprocal_rank(HITS, NREL, 4)[0] == 1.0
    late = np.array([[False, False, True, False]])
    assert M.reciprocal_rank(late, NREL, 4)[0] == pytest.approx(1 / 3)
    assert M.reciprocal_rank(late, NREL, 2)[0] == 0.0
    assert M.hit_rate(late, NREL, 2)[0] == 0.0 and M.hit_rate(late, NREL, 3)[0] == 1.0


def test_perfect_ranking_is_one():
    hits = np.array([[True, True, False], [True, False, False]])
    nrel = np.array([2, 1])
    for fn in (M.recall, M.ndcg, M.average_precision, M.reciprocal_rank, M.hit_rate):
        assert np.allclose(fn(hits, nrel, 3), 1.0), fn.__name__


def test_rating_metrics_by_hand():
    assert M.rmse([3, 4], [1, 4]) == pytest.approx(math.sqrt(2))
    assert M.mae([3, 4, 5], [1, 4, 4]) == pytest.approx(1.0)


def test_beyond_accuracy_by_hand():
    recs = np.array([[0, 1], [0, 2]])
    assert M.coverage(recs, 4) == 0.75
    # Counts per item over 4 items: [2, 1, 1, 0] -> sorted [0, 1, 1, 2], total 4.
    # Gini = sum((2i - n - 1) x_i) / (n * total) = (-3*0 - 1*1 + 1*1 + 3*2) / 16 = 6 / 16
    assert M.gini(recs, 4) == pytest.approx(6 / 16)
    assert M.gini(np.array([[0], [1], [2], [3]]), 4) == pytest.approx(0.0)
    pop = np.array([0.5, 0.25, 0.125, 0.125])
    assert M.average_popularity(recs, pop).tolist() == pytest.approx([0.375, 0.3125])
    assert M.novelty(recs, pop).tolist() == pytest.approx([1.5, 2.0])
    # Empty slots (-1) are ignored.
    assert M.coverage(np.array([[0, -1]]), 2) == 0.5


def test_metric_parsing():
    assert Metric.parse("NDCG@10") == Metric("ndcg", 10)
    assert Metric.parse("hr@5").label == "HitRate@5"
    assert [m.label for m in parse_metrics("recall@20, rmse")] == ["Recall@20", "RMSE"]
    for bad, msg in [("ndcg", "needs a cutoff"), ("rmse@3", "takes no cutoff"),
                     ("foo@3", "unknown metric"), ("@@", "cannot parse")]:
        with pytest.raises(ConfigError, match=msg):
            Metric.parse(bad)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.data())
def test_ranges(n_users, k, data):
    hits = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k),
                                       min_size=n_users, max_size=n_users)))
    extra = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n_users, max_size=n_users)))
    nrel = hits.sum(axis=1) + extra  # at least as many relevant as hits
    for fn in (M.precision, M.recall, M.ndcg, M.average_precision, M.reciprocal_rank,
               M.hit_rate):
        v = fn(hits, nrel, k)
        assert v.shape == (n_users,)
        assert np.all(v >= 0) and np.all(v <= 1 + 1e-12), fn.__name__
    # Recall never decreases with k; precision * k == hits.
    for kk in range(1, k):
        assert np.all(M.recall(hits, nrel, kk) <= M.recall(hits, nrel, kk + 1) + 1e-12)
