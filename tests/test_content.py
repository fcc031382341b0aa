"""Item features, the content and hybrid models, cold items and users the model never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import ConfigError, DataError, Interactions, ModelError
from recforge.data import features as F
from recforge.data.split import cold_start_items
from recforge.data.vocabulary import Vocabulary
from recforge.evaluation import evaluate
from recforge.models import Recommender, create_model
from tests.conformance import ModelConformance


def _number(item) -> int:
    return int(str(item).removeprefix("item"))


def toy_features(items: Vocabulary) -> F.Features:
    """Features that carry the checkerboard's structure (parity) plus noise groups."""
    n = np.array([_number(i) for i in items.ids])
    return F.combine(
        F.categorical(items, [f"p{x % 2}" for x in n], "parity"),
        F.categorical(items, [f"b{x % 3}|c{x % 5}" for x in n], "genres"),
        F.text(items, [f"movie number {x} {'even' if x % 2 == 0 else 'odd'}" for x in n],
               "title", min_df=1))


class FeatureSuite(ModelConformance):
    def fit_model(self, model, data):
        return model.fit(data, item_features=toy_features(data.items))


class TestContent(FeatureSuite):
    model_name = "content"
    params = {"feature_weights": {"parity": 3.0}}

    def test_deterministic_with_seed(self, random_data):
        a = self.fit_model(self.make(), random_data)
        b = self.fit_model(self.make(), random_data)
        assert torch.equal(a.score(np.arange(5)), b.score(np.arange(5)))


class TestHybrid(FeatureSuite):
    model_name = "hybrid"
    params = {"embedding_dim": 16, "epochs": 10, "device": "cpu"}


class TestHybridBPR(FeatureSuite):
    model_name = "hybrid_bpr"
    params = {"embedding_dim": 16, "epochs": 30, "batch_size": 64, "learning_rate": 0.02,
              "device": "cpu"}


# -- features -----------------------------------------------------------------------------
def test_categorical_text_numeric_by_hand():
    ids = Vocabulary(["a", "b", "c"])
    cat = F.categorical(ids, ["x|y", "y", None], "g")
    assert cat.names.tolist() == ["g=x", "g=y"]
    assert cat.matrix.toarray().tolist() == [[1, 1], [0, 1], [0, 0]]
    assert cat.has_features().tolist() == [True, True, False]
    num = F.numeric(ids, [1990, 2000, np.nan], "year", bins=2)
    assert num.matrix.toarray().sum(axis=1).tolist() == [1, 1, 0]
    z = F.numeric(ids, [1.0, 3.0, 2.0], "n", bins=None)
    assert z.matrix.toarray().ravel().tolist() == pytest.approx([-1.2247, 1.2247, 0.0], abs=1e-3)
    txt = F.text(ids, ["the star wars", "star trek", ""], "title", min_df=1)
    assert set(txt.names) == {"title:star", "title:wars", "title:trek"}  # "the": stop word
    np.testing.assert_allclose(np.linalg.norm(txt.matrix.toarray()[:2], axis=1), 1, rtol=1e-6)


def test_combine_normalizes_each_group_and_aligns():
    a = F.categorical(Vocabulary([1, 2]), ["x|y|z", "x"], "genres")
    b = F.categorical(Vocabulary([2, 3]), ["k", "k"], "tags")
    both = F.combine(a, b)
    assert both.ids.ids.tolist() == [1, 2, 3]
    norm = both.normalized({"tags": 2.0}).toarray()
    # Row 2 has one genre and one tag: unit length per group, tags weighted 2.
    assert norm[1].tolist() == pytest.approx([1, 0, 0, 2])
    assert norm[0, :3] == pytest.approx([1 / np.sqrt(3)] * 3)
    aligned = both.align(Vocabulary([3, 9, 1]))
    assert aligned.matrix.toarray()[1].sum() == 0 and aligned.matrix.toarray()[0, 3] == 1
    with pytest.raises(ConfigError, match="unknown groups"):
        both.normalized({"nope": 1.0})


def test_from_frame_infers_kinds_and_reports_bad_tables(tmp_path):
    frame = pd.DataFrame({"item": [10, 20, 30, 40],
                          "genres": ["Drama|War", "Comedy", "Drama", None],
                          "plot": ["a long tale of war and love", "two friends on a road trip",
                                   "a war story told by a soldier", "love in the city tonight"],
                          "year": [1990, 1995, 2001, 2010]})
    kinds = F.infer_kinds(frame, ["genres", "plot", "year"])
    assert kinds == {"genres": "categorical", "plot": "text", "year": "numeric"}
    path = tmp_path / "items.csv"
    frame.to_csv(path, index=False)
    feats = F.read_features(path)
    assert set(feats.groups) == {"genres", "plot", "year"} and len(feats) == 4
    assert "genres=War" in set(feats.names)
    frame.loc[2, "item"] = 10
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="row 3, column 'item': id 10 appears twice") as err:
        F.read_features(path)  # the third data row, 1-based as every reader counts
    assert "items.csv" in str(err.value)
    with pytest.raises(DataError, match="no id column"):
        F.read_features(path, id_column="movieId")
    with pytest.raises(DataError, match="not found"):
        F.read_features(tmp_path / "missing.csv")


# -- content model ------------------------------------------------------------------------
def genre_world():
    """Users who like either comedies or dramas; item 'new' (a comedy) has no events."""
    items = ["c1", "c2", "c3", "d1", "d2", "d3", "new"]
    genres = ["Comedy", "Comedy", "Comedy", "Drama", "Drama", "Drama", "Comedy"]
    feats = F.categorical(Vocabulary(items), genres, "genres")
    rows = [("u1", "c1", 5.0), ("u1", "c2", 4.0), ("u1", "d1", 1.0),
            ("u2", "d1", 5.0), ("u2", "d2", 5.0), ("u2", "c1", 2.0)]
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "rating"]),
                                   columns={"value": "rating"})
    return data, feats


def test_content_prefers_liked_genre_and_reaches_new_items():
    data, feats = genre_world()
    model = create_model("content").fit(data, item_features=feats)
    assert "new" in model.items_  # an item known only from the features joins the catalogue
    recs = model.recommend(["u1", "u2"], k=2)
    top = recs.groupby("user")["item"].apply(list).to_dict()
    assert set(top["u1"]) == {"c3", "new"}  # the comedy fan: the comedies left
    assert set(top["u2"]) == {"d3"} | (set(top["u2"]) - {"d3"}) and top["u2"][0] == "d3"
    sims = model.similar_items(["new"], k=2)
    assert set(sims["similar"]) <= {"c1", "c2", "c3"}
    why = model.explain("u1", "c3")
    assert why["features"]["feature"].tolist()[0] == "genres=Comedy"
    assert why["items"]["item"].tolist()[:2] in (["c1", "c2"], ["c2", "c1"])
    assert why["score"] == pytest.approx(float(model.score([model.users_.index(["u1"])[0]],
                                                           model.items_.index(["c3"]))[0, 0]),
                                         abs=1e-5)
    # A rating below the user's mean pushes its genre away (centred weights).
    weights = why["items"].set_index("item")["weight"]
    assert weights["d1"] < 0 < weights["c1"]


def test_content_needs_features_with_clear_errors():
    data, feats = genre_world()
    with pytest.raises(ConfigError, match="item_features"):
        create_model("content").fit(data)
    other = F.categorical(Vocabulary(["x", "y"]), ["a", "b"], "genres")
    with pytest.raises(DataError, match="no item of the training data has any feature"):
        create_model("content").fit(data, item_features=other)


def test_user_features_are_refused_where_a_model_does_not_use_them():
    data, feats = genre_world()
    users = F.categorical(data.users, ["a"] * data.n_users, "group")
    for name in ("content", "hybrid"):
        with pytest.raises(ConfigError, match="does not use user features"):
            create_model(name).fit(data, item_features=feats, user_features=users)
    create_model("hybrid_bpr", epochs=1).fit(data, item_features=feats, user_features=users)


def test_history_of_unknown_items_is_reported():
    data, feats = genre_world()
    model = create_model("content").fit(data, item_features=feats)
    recs = model.recommend_for_history(["c1", "zzz"], k=3, unknown="skip")
    assert recs.attrs["unknown_items"] == ["zzz"]
    assert recs["item"].iloc[0] in {"c2", "c3", "new"}
    with pytest.raises(ModelError, match="zzz"):
        model.recommend_for_history(["c1", "zzz"], k=3)
    with pytest.raises(ModelError, match="cannot score a history"):
        create_model("pop").fit(data).recommend_for_history(["c1"], k=3)


# -- cold items end to end ------------------------------------------------------------------
def cold_world(seed=0):
    """Items in 8 genres; each user likes two genres and interacts with items of them."""
    rng = np.random.default_rng(seed)
    n_items, n_users = 200, 150
    genre = rng.integers(0, 8, n_items)
    likes = np.stack([rng.choice(8, 2, replace=False) for _ in range(n_users)])
    rows = []
    for u in range(n_users):
        pool = np.flatnonzero(np.isin(genre, likes[u]))
        for i in rng.choice(pool, 12, replace=False):
            rows.append((u, i))
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    feats = F.categorical(Vocabulary(np.arange(n_items)), [f"g{g}" for g in genre], "genres")
    return data, feats


@pytest.mark.parametrize("name,params", [
    ("content", {}),
    ("hybrid", {"embedding_dim": 16}),
    ("hybrid_bpr", {"embedding_dim": 16, "epochs": 15, "batch_size": 128,
                    "learning_rate": 0.02}),
])
def test_cold_items_beat_random(name, params):
    data, feats = cold_world()
    split = cold_start_items(data, test_size=0.25, seed=1)
    cold = data.items.ids[np.unique(split.test.item)]
    model = create_model(name, **params).fit(split.train, item_features=feats)
    r = evaluate(model, split.train, split.test, metrics="recall@10", candidates=cold)
    random_recall = 10 / len(cold)
    assert r["Recall@10"] > 2.5 * random_recall, (r["Recall@10"], random_recall)


def test_evaluate_candidates_counts_and_errors(random_data):
    model = create_model("pop").fit(random_data)
    with pytest.raises(ConfigError, match="unknown to the model"):
        evaluate(model, random_data, random_data, candidates=["nope"])
    some = random_data.items.ids[:5]
    r = evaluate(model, None, random_data, metrics="recall@5", candidates=some,
                 exclude_seen=False)
    assert any("outside the candidates" in n for n in r.notes)
    assert r["Recall@5"] == pytest.approx(1.0)  # every relevant candidate fits in the top 5


def test_saved_hybrid_keeps_cold_item_scores(tmp_path):
    data, feats = cold_world()
    split = cold_start_items(data, test_size=0.25, seed=1)
    model = create_model("hybrid_bpr", embedding_dim=8, epochs=3, batch_size=256).fit(
        split.train, item_features=feats)
    loaded = Recommender.load(model.save(tmp_path / "h"))
    assert torch.equal(loaded.score(np.arange(10)), model.score(np.arange(10)))
    assert loaded.item_features_.n_features == feats.n_features


def test_saved_als_hybrid_keeps_its_item_features(tmp_path):
    """``hybrid`` saves the item features with the factors (explanations and text search
    read them when it is served); a model saved without them still loads."""
    import json

    data, feats = cold_world()
    model = create_model("hybrid", embedding_dim=8, epochs=2).fit(data, item_features=feats)
    path = model.save(tmp_path / "h")
    loaded = Recommender.load(path)
    assert torch.equal(loaded.score(np.arange(10)), model.score(np.arange(10)))
    assert (loaded.item_features_.matrix != feats.matrix).nnz == 0
    assert loaded.item_features_.names.tolist() == feats.names.tolist()
    # an artefact of the earlier format: factors only
    meta = json.loads((path / "meta.json").read_text())
    assert "item_features_names" in meta["extra"]
    old = create_model("hybrid", embedding_dim=8, epochs=2).fit(data, item_features=feats)
    old.item_features_ = None
    loaded_old = Recommender.load(old.save(tmp_path / "old"))
    assert loaded_old.item_features_ is None
    assert torch.equal(loaded_old.score(np.arange(10)), old.score(np.arange(10)))


def test_text_embeddings_need_a_local_model(tmp_path):
    with pytest.raises(ConfigError, match="does not download|recforge\\[text\\]"):
        F.text_embeddings(Vocabulary([1]), ["a film"], "title", model=tmp_path / "no-model")


def test_text_embeddings_with_a_local_model():
    st = pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    import os

    path = os.environ.get("RECFORGE_TEXT_MODEL")
    if not path:
        pytest.skip("set RECFORGE_TEXT_MODEL to a local sentence-transformers model directory")
    feats = F.text_embeddings(Vocabulary([1, 2]), ["a space opera", "a romantic comedy"],
                              "title", model=path)
    assert feats.matrix.shape[0] == 2 and st is not None


def test_hybrid_maps_features_of_cold_items_to_factors():
    """Cold items get the factors their features map to; warm items keep their ALS factors."""
    data, feats = cold_world()
    split = cold_start_items(data, test_size=0.25, seed=1)
    als = create_model("als", embedding_dim=16).fit(split.train)
    hyb = create_model("hybrid", embedding_dim=16).fit(split.train, item_features=feats)
    warm = split.train.item_counts() > 0
    assert torch.equal(hyb.item_factors_[torch.from_numpy(warm)],
                       als.item_factors_[torch.from_numpy(warm)])
    cold = ~warm
    assert (hyb.item_factors_[torch.from_numpy(cold)].abs().sum(1) > 0).all()
    # Two cold items with the same features get the same factors.
    g = np.array([int(n.split("=g")[1]) for n in feats.names])[feats.matrix.indices]
    idx = np.flatnonzero(cold)
    same = [(a, b) for a in idx for b in idx if a < b and g[a] == g[b]][:1]
    for a, b in same:
        assert torch.allclose(hyb.item_factors_[a], hyb.item_factors_[b])


def test_ridge_map_matches_closed_form():
    import scipy.sparse as sp

    from recforge.models.hybrid import ridge_map

    rng = np.random.default_rng(0)
    f = sp.random(50, 12, density=0.3, random_state=0, format="csr")
    y = rng.normal(size=(50, 4))
    w = ridge_map(f, y, 0.5)
    exact = np.linalg.solve((f.T @ f).toarray() + 0.5 * np.eye(12), f.T @ y)
    np.testing.assert_allclose(w, exact, atol=1e-6)


def test_ratings_are_centred_whatever_the_first_stored_values():
    """Centring was decided from the first 10,000 stored ratings: 10,000 early 4-star
    events switched it off, and a user's 1-star horror counted as liked."""
    filler = pd.DataFrame({"user": np.repeat(np.arange(1000), 10),
                           "item": np.tile([f"f{j}" for j in range(10)], 1000), "rating": 4.0})
    fan = pd.DataFrame({"user": [5000] * 5, "item": ["c1", "c2", "h1", "h2", "h4"],
                        "rating": [5.0, 5.0, 1.0, 1.0, 1.0]})
    others = pd.DataFrame({"user": [6000] * 4, "item": ["c3", "h3", "c1", "h1"],
                           "rating": 3.0})
    data = Interactions.from_frame(pd.concat([filler, fan, others], ignore_index=True))
    items = data.items
    genre = ["comedy" if str(i).startswith("c") else "horror" if str(i).startswith("h")
             else "filler" for i in items.ids]
    model = create_model("content").fit(data, item_features=F.categorical(items, genre, "g"))
    top = model.recommend([5000], k=2)["item"].tolist()
    assert top[0] == "c3"  # the comedy left, not the horror film


def test_repeated_implicit_events_are_not_centred_as_ratings(tmp_path):
    """A repeated event in implicit data summed to 2 beside 1s and switched centring on:
    the comedy a user watched counted against comedies."""
    frame = pd.DataFrame({"user": [1, 1, 2, 2],
                          "item": ["drama1", "comedy1", "drama2", "comedy2"]})
    data = Interactions.from_frame(frame)
    data = data.concat(data.subset(np.array([0])))  # drama1 watched twice
    genre = [str(i)[:-1] for i in data.items.ids]
    model = create_model("content").fit(data, item_features=F.categorical(data.items, genre,
                                                                           "genres"))
    assert sorted(model.weights_[0].data.tolist()) == [1.0, 1.0]
    scores = model.score([0]).numpy()[0]
    np.testing.assert_allclose(scores, scores[0])  # one drama, one comedy watched: all equal
    model.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    np.testing.assert_allclose(again.score([0]).numpy()[0], scores)
    # A history posted without values is not centred either.
    hist = again.recommend_for_history(["drama1", "comedy1"], k=2)
    assert len(hist) == 2
