"""Every built-in model runs the conformance suite, plus model-specific checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError, Interactions
from recforge.models import create_model
from recforge.models.registry import available_models, get_model_class


class TestPopularity(ModelConformance):
    model_name = "pop"

    def test_scores_are_counts(self, random_data):
        model = create_model("pop").fit(random_data)
        assert np.array_equal(model.score([0])[0].numpy(), random_data.item_counts())

    def test_similar_items_unsupported(self, random_data):
        from recforge import ModelError

        model = create_model("pop").fit(random_data)
        with pytest.raises(ModelError, match="similar_items"):
            model.similar_items(random_data.items.ids[:1])


class TestItemKNN(ModelConformance):
    model_name = "itemknn"
    params = {"neighbors": 10}

    def test_similarity_by_hand(self):
        # Items a, b share users 0 and 1; c only has user 2.
        data = Interactions.from_frame(__import__("pandas").DataFrame(
            {"user": [0, 0, 1, 1, 2, 1], "item": ["a", "b", "a", "b", "c", "c"]}))
        model = create_model("itemknn", neighbors=5).fit(data)
        sim = model.similarity_.toarray()
        a, b, c = data.items.index(["a", "b", "c"])
        assert sim[a, b] == pytest.approx(1.0)  # identical columns
        assert sim[a, c] == pytest.approx(1 / (np.sqrt(2) * np.sqrt(2)))
        assert sim[a, a] == 0.0
        shrunk = create_model("itemknn", neighbors=5, shrink=2.0).fit(data).similarity_.toarray()
        assert shrunk[a, b] == pytest.approx(2 / (2 + 2))

    def test_neighbors_limit(self, random_data):
        model = create_model("itemknn", neighbors=3).fit(random_data)
        assert np.diff(model.similarity_.indptr).max() <= 3

    def test_bad_params(self, random_data):
        with pytest.raises(ConfigError, match="neighbors"):
            create_model("itemknn", neighbors=0).fit(random_data)

    def test_no_similarity_is_no_neighbour_and_ties_go_to_the_popular(self):
        import pandas as pd

        # a and b share users; c, d and e share none with a; d and e are the most popular
        data = Interactions.from_frame(pd.DataFrame(
            {"user": [0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 6],
             "item": ["a", "b", "a", "b", "c", "d", "d", "e", "e", "d", "e"]}))
        model = create_model("itemknn", neighbors=5).fit(data)
        sims = model.similar_items(["a"], k=4)
        assert sims["similar"].tolist() == ["b"]  # c, d, e have no user in common with a
        # user 2 (only c) has no neighbour of c to score: the unseen items tie at 0 and come
        # in order of popularity (d and e: 3 users each, then a and b: 2)
        recs = model.recommend([2], k=4)
        assert recs["item"].tolist() == ["d", "e", "a", "b"] and (recs["score"] == 0).all()


class TestEASE(ModelConformance):
    model_name = "ease"
    params = {"reg": 10.0}

    def test_closed_form(self, random_data):
        model = create_model("ease", reg=5.0).fit(random_data)
        x = random_data.binary_csr.toarray().astype(np.float64)
        g = x.T @ x + 5.0 * np.eye(x.shape[1])
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        assert np.allclose(model.weights_.numpy(), b, atol=1e-4)
        assert torch.allclose(model.score([0, 1]), torch.from_numpy(x[:2] @ b).float(), atol=1e-3)

    def test_bad_reg(self, random_data):
        with pytest.raises(ConfigError, match="reg"):
            create_model("ease", reg=-1).fit(random_data)


def test_registry_names():
    assert {"pop", "itemknn", "ease"} <= set(available_models())
    with pytest.raises(ConfigError, match="did you mean 'ease'"):
        get_model_class("eas")


def test_outputs_keep_the_request_order_and_the_vocabulary_types(random_data):
    model = create_model("ease", reg=10.0).fit(random_data)
    users = random_data.users.ids
    asked = [999_999, users[0], 999_999, users[1]]
    recs = model.recommend(asked, k=2, unknown="popular")
    assert recs["user"].tolist() == [999_999, 999_999, users[0], users[0], 999_999, 999_999,
                                     users[1], users[1]]
    item = random_data.items.ids[0]
    sims = model.similar_items([str(item)], k=2)
    # the ids as asked, in their type ("1" asked, "1" answered: a join key), as recommend does
    assert sims["item"].tolist() == [str(item), str(item)] and sims["similar"].dtype == np.int64


def test_top_k_takes_and_orders_ties_by_column_like_a_stable_sort():
    from recforge.ranking import topk_with_ties as _top_k_ties_in_order

    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = torch.randint(0, 4, (5, 12), generator=g).float()
        x[x == 3] = -float("inf")  # excluded items tie too
        k = int(torch.randint(0, 13, (1,), generator=g))
        pos, vals = _top_k_ties_in_order(x, k)
        ref = torch.sort(x, dim=1, descending=True, stable=True)
        assert torch.equal(pos, ref.indices[:, :k]) and torch.equal(vals, ref.values[:, :k])


def test_random_ties_are_drawn_per_row_among_the_tied_only():
    from recforge.ranking import random_ties
    from recforge.ranking import topk_with_ties as _top_k_ties_in_order

    scores = torch.tensor([[5.0, 1, 1, 1, 1, 0, 1, 1], [2, 2, 2, 2, 2, 2, 2, 2]]).repeat(500, 1)
    rows = torch.arange(len(scores))
    pos, vals = _top_k_ties_in_order(scores, 3, random_ties(rows, 8, seed=3))
    assert (pos[0::2, 0] == 0).all() and (vals[0::2] == torch.tensor([5.0, 1, 1])).all()
    assert not torch.isin(pos[0::2], torch.tensor([5])).any()  # never the lower score
    counts = torch.bincount(pos[1::2].flatten(), minlength=8).float()  # 8 tied, 3 drawn
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    assert len({tuple(r) for r in pos[1::2].tolist()}) > 5  # rows draw apart
    # the same (row id, column) draws the same, in any batch
    half = _top_k_ties_in_order(scores[500:], 3, random_ties(rows[500:], 8, seed=3))[0]
    assert torch.equal(half, pos[500:])
    assert not torch.equal(_top_k_ties_in_order(scores, 3, random_ties(rows, 8, seed=4))[0],
                           pos)
    nan = torch.tensor([[float("nan"), 1.0, float("nan"), 1.0, 1.0, 0.0]])
    assert _top_k_ties_in_order(nan, 4)[0].tolist() == [[1, 3, 4, 5]]  # NaN ranks last


def test_edges_of_the_models(random_data):
    """Each case failed before: a raw LinAlgError (ease, mf's fold-in with reg=0), an
    empty similar_items call, NaN scores of a one-item blend, pop counting a repeated pair
    twice, ids near the int64 maximum or True taken for ids, ties of a history fold-in
    ordered otherwise than recommend's."""
    import pandas as pd

    from recforge import ModelError
    from recforge.data.vocabulary import Vocabulary

    twins = Interactions.from_frame(pd.DataFrame(  # items 1 and 2: the same users
        {"user": [u for u in range(1, 6) for _ in (1, 2)] + list(range(3, 8)),
         "item": [1, 2] * 5 + [3] * 5}))
    with pytest.raises(ModelError, match="reg=1e-30 is too small"):
        create_model("ease", reg=1e-30).fit(twins)
    rated = Interactions.from_frame(pd.DataFrame({
        "user": np.arange(300) % 30, "item": (np.arange(300) * 7) % 50,
        "rating": (np.arange(300) % 5 + 1).astype(float)}), duplicates="first")
    mf = create_model("mf", reg=0.0, epochs=2, embedding_dim=8).fit(rated)
    one = mf.recommend_for_history([rated.items.ids[0]], k=3)
    assert len(one) == 3 and np.isfinite(one["score"]).all()
    assert create_model("ease").fit(random_data).similar_items([], k=3).empty
    single = Interactions.from_frame(pd.DataFrame({"user": [0, 1], "item": [5, 5]}))
    blend = create_model("blend", models={"pop": {}, "ease": {}}).fit(single)
    assert np.isfinite(blend.score([0]).numpy()).all()
    repeated = random_data.concat(random_data.subset(np.array([0])))
    pop = create_model("pop").fit(repeated)
    assert pop.item_popularity_.tolist() == create_model("pop").fit(
        random_data).item_popularity_.tolist()
    vocab, _ = Vocabulary.from_values(np.array([1, 2**63 - 2], dtype=np.int64))
    assert vocab.index(np.asarray([2**63 - 2, True], dtype=object)).tolist() == [1, -1]
    knn = create_model("itemknn", neighbors=2).fit(random_data)
    user = random_data.users.ids[0]
    seen = random_data.items.ids[random_data.csr[0].indices]
    a = knn.recommend([user], k=len(random_data.items))["item"].tolist()
    b = knn.recommend_for_history(list(seen), k=len(random_data.items))["item"].tolist()
    assert a == b


def test_popular_fallbacks_are_marked_not_scored_with_counts(random_data):
    """Unknown users answered with popular items: their rows say so (``fallback``), carry
    the count apart (``popularity``) and have no score, so no count sits beside the model's
    scores in one column; known users' rows are as ``unknown="skip"`` gives them."""
    model = create_model("ease", reg=10.0).fit(random_data)
    known = random_data.users.ids[0]
    recs = model.recommend([999_999, known], k=3, unknown="popular")
    fb = recs[recs["fallback"]]
    assert fb["user"].tolist() == [999_999] * 3 and fb["score"].isna().all()
    assert fb["popularity"].tolist() == sorted(random_data.item_counts(), reverse=True)[:3]
    mine = recs[~recs["fallback"]].drop(columns=["fallback", "popularity"])
    expected = model.recommend([known], k=3, unknown="skip")
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), expected)
    assert "fallback" not in expected.columns  # other policies keep the four columns
