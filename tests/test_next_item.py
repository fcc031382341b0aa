"""Next-item evaluation: metrics by hand, ties, seen items, the sampled protocol, sessions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluate import FixedScores  # scores from a fixed matrix, whatever the history

from recforge import ConfigError, DataError, Interactions, create_model
from recforge.data import split as S
from recforge.evaluation import evaluate, evaluate_next_item, evaluate_sessions
from recforge.models.base import Recommender


class NextIndex(Recommender):
    """Reads order: scores item ``last + 1`` of each user's history highest, the others by
    closeness to it (a model that is right exactly when a sequence counts up)."""

    name = "next_index"

    def __init__(self) -> None:
        pass

    def _fit(self, train, valid, options):
        pass

    def _score(self, users):
        return torch.zeros((len(users), self.n_items))

    def score_sequences(self, users, history):
        last = history.sequences().last(1, users=users)[:, 0]
        items = torch.arange(self.n_items, dtype=torch.float32)
        return -(items[None, :] - torch.from_numpy(last + 1)[:, None].float()).abs()


def frame(rows, **cols):
    return pd.DataFrame(rows, columns=["user", "item", *cols])


def interactions(rows, users=None, items=None):
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]),
                                   users=users, items=items)


@pytest.fixture
def two_users():
    """2 users x 6 items; user 0 has items 4, 5 in the history, user 1 item 0."""
    hist = interactions([(0, 4), (0, 5), (1, 0), (0, 0), (0, 1), (0, 2), (0, 3)])
    hist = hist.subset(np.arange(3))  # every item in the vocabulary, 3 history events
    scores = [[0, 6, 5, 4, 9, 8],   # user 0: target 3 has 4 items above (4, 5, 1, 2)
              [9, 0, 1, 2, 3, 7]]   # user 1: target 5 has item 0 above
    return FixedScores(scores).fit(hist), hist


def test_metrics_by_hand(two_users):
    model, hist = two_users
    test = interactions([(0, 3), (1, 5)], users=hist.users, items=hist.items)
    res = evaluate_next_item(model, hist, test, k=[1, 2, 5])
    # ranks (0-based): user 0 -> 4, user 1 -> 1
    assert res["HitRate@1"] == 0 and res["hr@2"] == 0.5 and res["hit_rate@5"] == 1.0
    assert res["NDCG@2"] == pytest.approx((0 + 1 / math.log2(3)) / 2)
    assert res["NDCG@5"] == pytest.approx((1 / math.log2(6) + 1 / math.log2(3)) / 2)
    assert res["MRR@5"] == pytest.approx((1 / 5 + 1 / 2) / 2)
    assert res.per_target["higher"].tolist() == [4, 1]
    assert res.per_target["length"].tolist() == [2, 1]
    assert res.n_users == 2 and res.n_targets == 2 and res.protocol == "full"
    # excluding the input items: user 0 loses items 4, 5 above it, user 1 item 0
    ex = evaluate_next_item(model, hist, test, k=2, exclude_seen=True)
    assert ex.per_target["higher"].tolist() == [2, 0]
    assert ex["MRR@2"] == pytest.approx((0 + 1) / 2)


def test_interval_is_the_normal_interval_of_the_mean(two_users):
    model, hist = two_users
    test = interactions([(0, 3), (1, 5)], users=hist.users, items=hist.items)
    res = evaluate_next_item(model, hist, test, k=5, metrics="mrr")
    v = np.array([1 / 5, 1 / 2])
    half = 1.959964 * v.std(ddof=1) / math.sqrt(2)
    assert res.interval("mrr@5") == pytest.approx((v.mean() - half, v.mean() + half))
    assert list(res.to_frame().columns) == ["metric", "value", "ci_low", "ci_high"]


def test_tie_policies():
    hist = interactions([(0, 5), (0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]).subset(np.arange(1))
    # target 0 ties with items 1, 2, 3; item 4 below, history item 5 below
    model = FixedScores([[5, 5, 5, 5, 1, 0]]).fit(hist)
    test = interactions([(0, 0)], users=hist.users, items=hist.items)
    exp = evaluate_next_item(model, hist, test, k=[2, 4], ties="expected")
    assert exp["HitRate@2"] == pytest.approx(2 / 4) and exp["HitRate@4"] == 1.0
    assert exp["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert exp["MRR@4"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    pes = evaluate_next_item(model, hist, test, k=[2, 4], ties="pessimistic")
    assert pes["HitRate@2"] == 0 and pes["NDCG@4"] == pytest.approx(1 / math.log2(5))
    opt = evaluate_next_item(model, hist, test, k=1, ties="optimistic")
    assert opt["HitRate@1"] == 1.0
    assert exp.per_target[["higher", "tied"]].values.tolist() == [[0, 3]]


def test_constant_scorer_gets_chance_and_nan_scores_rank_last():
    n = 50
    hist = interactions([(u, u) for u in range(n)])
    const = FixedScores(np.zeros((n, n)).tolist()).fit(hist)
    test = interactions([(u, (u + 1) % n) for u in range(n)], users=hist.users,
                        items=hist.items)
    res = evaluate_next_item(const, hist, test, k=10)
    assert res["HitRate@10"] == pytest.approx(10 / n)  # the target among n - 1 tied items
    nan = np.zeros((n, n))
    nan[np.arange(n), (np.arange(n) + 1) % n] = np.nan
    model = FixedScores(np.zeros((n, n)).tolist()).fit(hist)
    model.table_ = torch.tensor(nan, dtype=torch.float32)
    res = evaluate_next_item(model, hist, test, k=10)
    assert res["HitRate@10"] == 0 and (res.per_target["higher"] == n - 1).all()


def test_exclude_seen_never_removes_the_target():
    # a re-watch: the target (item 1) is in the history, and so is item 0, scored above it
    hist = interactions([(0, 0), (0, 1), (0, 2), (0, 3)]).subset(np.arange(2))
    model = FixedScores([[9, 5, 1, 0]]).fit(hist)
    test = interactions([(0, 1)], users=hist.users, items=hist.items)
    assert evaluate_next_item(model, hist, test, k=1)["HitRate@1"] == 0
    res = evaluate_next_item(model, hist, test, k=1, exclude_seen=True)
    assert res["HitRate@1"] == 1.0 and res.per_target["higher"].tolist() == [0]


def test_several_targets_are_ranked_apart():
    hist = interactions([(0, 4), (0, 0), (0, 1), (0, 2), (0, 3)]).subset(np.arange(1))
    model = FixedScores([[9, 8, 7, 1, 0]]).fit(hist)
    test = interactions([(0, 0), (0, 1), (0, 2)], users=hist.users, items=hist.items)
    res = evaluate_next_item(model, hist, test, k=1)
    # the other targets never count against a target: each is first among the rest
    assert res.per_target["higher"].tolist() == [0, 0, 0] and res["HitRate@1"] == 1.0
    assert res.n_users == 1 and res.n_targets == 3


def test_sampled_protocol_is_seeded_labelled_and_skips_the_input():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 300
    rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, 5, replace=False)]
    every = [(n_users, i) for i in range(n_items)]  # puts every item in the vocabulary
    hist = interactions(rows + every).subset(np.arange(len(rows)))
    test_rows = [(u, int(rng.integers(n_items))) for u in range(n_users)]
    test_rows = [(u, i) for u, i in test_rows if (u, i) not in set(rows)]
    test = interactions(test_rows, users=hist.users, items=hist.items)
    scores = rng.random((n_users + 1, n_items))
    # the input items score highest of all: full ranking puts 5 items above every target
    for u, i in rows:
        scores[u, i] = 10.0
    model = FixedScores(scores.tolist()).fit(hist)
    a = evaluate_next_item(model, hist, test, k=10, sampled=50, seed=1)
    b = evaluate_next_item(model, hist, test, k=10, sampled=50, seed=1)
    c = evaluate_next_item(model, hist, test, k=10, sampled=50, seed=2)
    assert a.summary == b.summary and a.protocol == "sampled 1+50"
    assert a.per_target["higher"].tolist() != c.per_target["higher"].tolist()
    assert list(a.summary)[0] == "HitRate@10 (sampled 1+50)"
    assert a["hr@10"] == a.summary["HitRate@10 (sampled 1+50)"]
    assert (a.per_target["higher"] <= 50).all()
    full = evaluate_next_item(model, hist, test, k=10)
    assert (full.per_target["higher"] >= 5).all()
    assert a["NDCG@10"] > full["NDCG@10"]


def test_unknown_users_items_and_empty_histories():
    hist = interactions([(0, 0), (0, 1), (1, 1), (2, 2)]).subset(np.arange(3))
    model = FixedScores([[1, 2, 3]] * 3).fit(hist)
    test = Interactions.from_frame(pd.DataFrame({"user": [0, 1, 2, 9], "item": [2, 7, 0, 0]}))
    res = evaluate_next_item(model, hist, test, k=1)
    # user 9 is unknown, user 2 has no history; item 7 is a miss
    assert res.n_targets == 2 and res.per_target["HitRate@1"].tolist() == [1.0, 0.0]
    assert any("unknown to the model" in n for n in res.notes)
    assert any("without any history" in n for n in res.notes)


def test_breakdown_by_history_length():
    lengths = [1, 3, 7, 30, 60, 250]
    rows = [(u, i) for u, n in enumerate(lengths) for i in range(n)]
    hist = interactions(rows + [(0, 300)])
    hist = hist.subset(np.arange(len(rows)))
    target = int(hist.items.index([300])[0])
    scores = np.zeros((len(lengths), len(hist.items)))
    scores[:, target] = [1.0, 1, 0, 0, -1, -1]  # hits for the two shortest, misses last
    model = FixedScores(scores.tolist()).fit(hist)
    test = Interactions(np.arange(6), np.full(6, target), users=hist.users, items=hist.items)
    res = evaluate_next_item(model, hist, test, k=1)
    table = res.by_length
    assert table["length"].tolist() == ["1-5", "6-20", "21-50", "51-200", "201+"]
    assert table["n_targets"].tolist() == [2, 1, 1, 1, 1]
    assert table["HitRate@1"].tolist()[0] == 1.0 and table["HitRate@1"].tolist()[4] == 0.0
    q = evaluate_next_item(model, hist, test, k=1, by_length=2).by_length
    assert q["n_targets"].sum() == 6 and len(q) == 2
    assert evaluate_next_item(model, hist, test, k=1, by_length=None).by_length is None


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be"), ({"k": [5, "x"]}, "k must be"), ({"metrics": "recall"}, "hit_rate"),
    ({"ties": "random"}, "ties must be"), ({"sampled": 0}, "sampled must be"),
    ({"by_length": [5, 1]}, "by_length"), ({"metrics": "bogus"}, "unknown metric")])
def test_bad_options(two_users, kwargs, match):
    model, hist = two_users
    test = interactions([(0, 3)], users=hist.users, items=hist.items)
    with pytest.raises(ConfigError, match=match):
        evaluate_next_item(model, hist, test, **kwargs)


def test_bad_scores_shape_is_a_model_error(two_users):
    model, hist = two_users
    model.score_sequences = lambda users, history: torch.zeros(len(users), 2)
    test = interactions([(0, 3)], users=hist.users, items=hist.items)
    with pytest.raises(Exception, match="expected \\(1, 6\\)"):
        evaluate_next_item(model, hist, test)


def counting_log(n_users=30, length=12, seed=0):
    """Sequences that count up (item t at position t, from a per-user offset)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, 20))
        rows += [(u, start + t) for t in range(int(rng.integers(4, length)))]
    return interactions(rows)


def test_leave_last_out_history_is_the_whole_earlier_sequence():
    data = counting_log()
    split = S.leave_last_out(data, valid=True)
    model = NextIndex().fit(split.train, split.valid)
    # the history holds the validation event, so "last + 1" is the test item every time
    res = evaluate_next_item(model, split.history, split.test, k=1)
    assert res["HitRate@1"] == 1.0 and res.n_targets == len(split.test)
    # from train alone the model predicts the validation item instead: every one a miss
    assert evaluate_next_item(model, split.train, split.test, k=1)["HitRate@1"] == 0.0
    assert split.test_input() is split.history


def test_non_sequential_models_match_evaluate_on_one_call(random_data):
    split = S.leave_last_out(random_data)
    for name in ("pop", "ease"):
        model = create_model(name).fit(split.train)
        for ex in (False, True):
            nxt = evaluate_next_item(model, split.history, split.test, k=10, exclude_seen=ex)
            ref = evaluate(model, split.train, split.test, exclude_seen=ex,
                           metrics="hr@10,ndcg@10,mrr@10")
            assert nxt.n_targets == ref.n_users
            labels = ("HitRate@10", "NDCG@10", "MRR@10")
            if name == "ease":  # no ties at the targets: the same figures exactly
                for label in labels:
                    assert nxt[label] == pytest.approx(ref[label], abs=1e-12), (ex, label)
                continue
            # popularity ties a lot: one random order of ties lies between the bounds
            lo = evaluate_next_item(model, split.history, split.test, k=10, exclude_seen=ex,
                                    ties="pessimistic")
            hi = evaluate_next_item(model, split.history, split.test, k=10, exclude_seen=ex,
                                    ties="optimistic")
            for label in labels:
                assert lo[label] <= ref[label] <= hi[label], (ex, label)
                assert lo[label] <= nxt[label] <= hi[label]
            assert lo["MRR@10"] < hi["MRR@10"]  # the ties do matter here


def test_session_protocol_predicts_from_the_prefix():
    # user 0 has two held-out sessions (they take turns), user 1 one, user 2 a broken one
    rows = pd.DataFrame({"user": [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2],
                         "item": [1, 2, 3, 7, 8, 4, 5, 6, 7, 9, 3, 4],
                         "session": [10, 10, 10, 11, 11, 20, 20, 20, 20, 30, 30, 30],
                         "timestamp": [1, 2, 3, 4, 5, 1, 2, 3, 4, 1, 2, 3]})
    data = Interactions.from_frame(rows)
    model = NextIndex().fit(data)
    res = evaluate_sessions(model, data, k=1)
    pt = res.per_target
    assert len(pt) == 2 + 1 + 3 + 2 and res.n_targets == 8
    assert pt.loc[pt.user != 2, "HitRate@1"].tolist() == [1.0] * 6
    # user 2: 9 -> 3 is a miss (the model says 10), 3 -> 4 a hit
    assert pt.loc[pt.user == 2, "HitRate@1"].tolist() == [0.0, 1.0]
    assert pt["length"].tolist()[:3] == [1, 2, 1]
    with pytest.raises(DataError, match="no session column"):
        evaluate_sessions(model, Interactions.from_frame(rows.drop(columns="session")))


def test_last_sessions_split_feeds_the_session_protocol():
    rng = np.random.default_rng(3)
    n = 600
    frame_ = pd.DataFrame({"user": rng.integers(0, 30, n), "item": rng.integers(0, 25, n),
                           "timestamp": np.sort(rng.integers(0, 200_000, n))})
    data = Interactions.from_frame(frame_, duplicates="first")
    split = S.last_sessions_split(data, 0.2, gap=3_000)
    model = create_model("pop").fit(split.train)
    res = evaluate_sessions(model, split.test, k=[5, 10])
    sizes = split.test.to_frame().groupby(["user", "session"]).size()
    assert res.n_targets == int((sizes - 1).sum()) > 0
    assert 0 <= res["NDCG@5"] <= res["NDCG@10"] <= res["HitRate@10"] <= 1
