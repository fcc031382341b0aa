"""The evaluation protocol: seen items excluded, unknown ids handled, values by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import ConfigError, Interactions
from recforge.evaluation import bootstrap_ci, evaluate
from recforge.models.base import Recommender


class FixedScores(Recommender):
    """A test model whose scores are a fixed matrix given at construction."""

    name = "fixed"

    def __init__(self, scores: list | None = None) -> None:
        self.scores = scores

    def _fit(self, train, valid, options):
        self.table_ = torch.tensor(self.scores, dtype=torch.float32)

    def _score(self, users):
        return self.table_[users]


def make(frame_rows, users=None, items=None):
    frame = pd.DataFrame(frame_rows, columns=["user", "item"])
    return Interactions.from_frame(frame, users=users, items=items)


@pytest.fixture
def setup():
    # 2 users, 5 items. User 0 has seen item 0; user 1 has seen items 3 and 4.
    train = make([(0, 0), (1, 3), (1, 4), (0, 1), (1, 2)])
    train = train.subset(np.array([0, 1, 2]))  # keep (0,0), (1,3), (1,4); all 5 items known
    scores = [[9, 8, 7, 6, 5],   # user 0: seen item 0 excluded -> ranking 1, 2, 3, 4
              [1, 2, 3, 9, 8]]   # user 1: seen 3, 4 excluded -> ranking 2, 1, 0
    model = FixedScores(scores).fit(train)
    return model, train


def test_full_ranking_by_hand(setup):
    model, train = setup
    test = make([(0, 2), (0, 4), (1, 0)], users=train.users, items=train.items)
    res = evaluate(model, train, test, metrics="recall@2,ndcg@2,precision@2,mrr@3,hr@1")
    # User 0 top-2 = [1, 2]: one hit (item 2) at rank 2, 2 relevant.
    # User 1 top-2 = [2, 1]: no hit; item 0 is at rank 3.
    assert res["Recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert res["NDCG@2"] == pytest.approx(ndcg0 / 2)
    assert res["Precision@2"] == pytest.approx((0.5 + 0) / 2)
    assert res["MRR@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert res["HitRate@1"] == 0.0
    assert res.n_users == 2 and list(res.per_user.columns)[:1] == ["user"]
    assert res.per_user["Recall@2"].tolist() == pytest.approx([0.5, 0.0])


def test_tied_scores_are_ranked_by_chance_not_by_item_index():
    """A model that scores every item alike must get what chance gives, not whatever the
    lowest item indices hold (here: every user's relevant items)."""
    n_users, n_items = 300, 100  # users 200-299 only bring every item into the vocabulary
    train = Interactions.from_frame(pd.DataFrame({
        "user": np.arange(n_users),
        "item": np.concatenate([50 + np.arange(200) % 50, np.arange(100)])}))
    model = FixedScores(np.zeros((n_users, n_items)).tolist()).fit(train)
    test = make([(u, i) for u in range(200) for i in range(5)], users=train.users,
                items=train.items)  # items 0-4: the lowest indices
    res = evaluate(model, train, test, metrics="recall@10")
    assert 0.04 < res["Recall@10"] < 0.17  # chance: 10 of the 99 unseen items, about 0.10
    again = evaluate(model, train, test, metrics="recall@10")
    assert again["Recall@10"] == res["Recall@10"]  # the tie order is seeded
    # distinct scores are ranked as before
    ranked = FixedScores((-np.tile(np.arange(n_items), (n_users, 1))).tolist()).fit(train)
    assert evaluate(ranked, train, test, metrics="recall@10")["Recall@10"] == 1.0


def test_no_known_test_user_is_an_error_not_a_zero(setup):
    from recforge import DataError

    model, train = setup
    test = Interactions.from_frame(pd.DataFrame({"user": [70, 71], "item": [1, 2]}))
    with pytest.raises(DataError, match="none of the 2 test users is known to the model"):
        evaluate(model, train, test, metrics="recall@5")


def test_a_test_pair_repeated_is_one_relevant_item(setup):
    model, train = setup
    once = make([(0, 2), (0, 4)], users=train.users, items=train.items)
    twice = make([(0, 2), (0, 4)], users=train.users, items=train.items)
    twice = once.concat(twice.subset(np.array([0])))  # (0, 2) held out twice
    a = evaluate(model, train, once, metrics="recall@2,ndcg@2")
    b = evaluate(model, train, twice, metrics="recall@2,ndcg@2")
    assert b.summary == a.summary and any("counted once" in n for n in b.notes)


def test_a_user_without_training_events_is_skipped_like_an_unknown_one(tmp_path):
    """Train and test files read into one vocabulary: a test-only user is in the model's
    vocabulary but has no history, and is skipped as `recforge evaluate` skips a user the
    model does not know (ranked from nothing, pop scored best on such users)."""
    from recforge.data.readers import read_many
    from recforge.models import create_model

    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("user,item\n1,10\n1,11\n2,10\n2,12\n3,11\n3,12\n")
    test.write_text("user,item\n1,12\n9,10\n9,11\n")  # user 9: only in the test file
    tr, te = read_many([train, test])
    assert 9 in tr.users  # the shared vocabulary
    model = create_model("pop").fit(tr)
    res = evaluate(model, tr, te, metrics="recall@2")
    assert res.n_users == 1 and any("without a training event" in n for n in res.notes)
    alone = read_many([train])[0]
    only_train = evaluate(create_model("pop").fit(alone), alone, te.reindex(
        alone.users, alone.items, unknown="drop"), metrics="recall@2")
    assert res["Recall@2"] == only_train["Recall@2"]


def test_seen_items_excluded_and_included(setup):
    model, train = setup
    test = make([(1, 3)], users=train.users, items=train.items)  # a test item also in train
    assert evaluate(model, train, test, metrics="hr@1")["HitRate@1"] == 0.0
    assert evaluate(model, train, test, metrics="hr@1",
                    exclude_seen=False)["HitRate@1"] == 1.0


def test_unknown_users_and_items(setup):
    model, train = setup
    test = Interactions.from_frame(pd.DataFrame({"user": [0, 0, 7], "item": [1, 99, 1]}))
    res = evaluate(model, train, test, metrics="recall@5")
    # User 7 unknown: skipped. Item 99 unknown: relevant but unretrievable -> recall 1/2.
    assert res.n_users == 1 and res["Recall@5"] == pytest.approx(0.5)
    assert any("unknown to the model" in n for n in res.notes)


def test_beyond_accuracy(setup):
    model, train = setup
    test = make([(0, 2), (1, 0)], users=train.users, items=train.items)
    res = evaluate(model, train, test, metrics="coverage@2,gini@2,arp@2")
    # Lists: user 0 [1, 2], user 1 [2, 1] -> items {1, 2} of 5.
    assert res["Coverage@2"] == pytest.approx(2 / 5)
    assert res["ARP@2"] == 0.0  # neither item 1 nor 2 appears in training
    assert res["Gini@2"] == pytest.approx(M_gini([0, 2, 2, 0, 0]))


def M_gini(counts):
    c = np.sort(np.asarray(counts, float))
    n = len(c)
    i = np.arange(1, n + 1)
    return ((2 * i - n - 1) * c).sum() / (n * c.sum())


def test_sampled_protocol_labels_and_values(setup):
    model, train = setup
    test = make([(0, 1)], users=train.users, items=train.items)
    res = evaluate(model, train, test, metrics="hr@1,ndcg@2", protocol="sampled", n_negatives=3)
    # User 0 negatives come from items {2, 3, 4}, all scored below item 1: rank 0.
    assert res["HitRate@1 (sampled 1+3)"] == 1.0
    assert res["NDCG@2 (sampled 1+3)"] == 1.0
    with pytest.raises(ConfigError, match="full protocol"):
        evaluate(model, train, test, metrics="coverage@2", protocol="sampled")


def test_rating_metrics_need_rating_model(setup):
    model, train = setup
    test = make([(0, 1)], users=train.users, items=train.items)
    with pytest.raises(ConfigError, match="does not predict ratings"):
        evaluate(model, train, test, metrics="rmse")


def test_batching_does_not_change_results(random_data):
    from recforge.data.split import random_split
    from recforge.models import create_model

    split = random_split(random_data, seed=1)
    model = create_model("itemknn").fit(split.train)
    a = evaluate(model, split.train, split.test, metrics="ndcg@10,recall@5")
    b = evaluate(model, split.train, split.test, metrics="ndcg@10,recall@5", batch_size=7)
    assert a.summary == pytest.approx(b.summary)


def test_bootstrap_ci():
    lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 200), seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.15
