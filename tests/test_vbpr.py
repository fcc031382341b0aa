"""vbpr: BPR with content vectors (He and McAuley 2016)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import ConfigError, Interactions
from recforge.data import features as F
from recforge.data.split import cold_start_items
from recforge.data.vectors import vectors_from_arrays
from recforge.data.vocabulary import Vocabulary
from recforge.evaluation import evaluate
from recforge.models import Recommender, create_model
from tests.conformance import ModelConformance
from tests.test_content import toy_features


class TestVBPR(ModelConformance):
    model_name = "vbpr"
    params = {"embedding_dim": 16, "visual_dim": 8, "epochs": 30, "batch_size": 64,
              "learning_rate": 0.02, "reg": 0.001, "device": "cpu"}

    def fit_model(self, model, data):
        return model.fit(data, item_features=toy_features(data.items))


def genre_world(seed=0, n_items=160, n_users=120, per_user=12):
    """Items in 8 genres; each user likes two genres and interacts with items of them."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, 8, n_items)
    likes = np.stack([rng.choice(8, 2, replace=False) for _ in range(n_users)])
    rows = []
    for u in range(n_users):
        pool = np.flatnonzero(np.isin(genre, likes[u]))
        rows += [(u, i) for i in rng.choice(pool, per_user, replace=False)]
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    return data, genre


def informative_vectors(genre, dim=16, noise=0.3, seed=0):
    """A stand-in for image features: a random direction per genre plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(genre.max() + 1, dim))
    return centres[genre] + noise * rng.normal(size=(len(genre), dim))


PARAMS = {"embedding_dim": 16, "visual_dim": 8, "epochs": 15, "batch_size": 128,
          "learning_rate": 0.02, "reg": 0.001, "device": "cpu", "seed": 0}


def test_informative_vectors_rank_cold_items_random_ones_do_not():
    data, genre = genre_world()
    split = cold_start_items(data, test_size=0.25, seed=1)
    cold = data.items.ids[np.unique(split.test.item)]
    ids = np.arange(len(genre))

    def cold_recall(vectors):
        feats = vectors_from_arrays(ids, vectors, name="image")
        model = create_model("vbpr", **PARAMS).fit(split.train, item_features=feats)
        return evaluate(model, split.train, split.test, metrics="recall@10",
                        candidates=cold)["Recall@10"]

    bpr = create_model("bpr", **{k: v for k, v in PARAMS.items() if k != "visual_dim"}
                       ).fit(split.train)
    bpr_recall = evaluate(bpr, split.train, split.test, metrics="recall@10",
                          candidates=cold)["Recall@10"]
    random_recall = 10 / len(cold)
    informative = cold_recall(informative_vectors(genre))
    noise = cold_recall(np.random.default_rng(5).normal(size=(len(genre), 16)))
    # bpr cannot rank items it never saw: chance level; neither can random vectors
    assert bpr_recall < 2 * random_recall, (bpr_recall, random_recall)
    assert noise < 2 * random_recall, (noise, random_recall)
    assert informative > 3 * random_recall and informative > 2 * bpr_recall, (
        informative, bpr_recall, noise, random_recall)


def test_random_vectors_match_bpr_on_warm_items():
    data, genre = genre_world(seed=2)
    from recforge.data.split import random_split
    split = random_split(data, test_size=0.2, seed=0)
    feats = vectors_from_arrays(np.arange(len(genre)),
                                np.random.default_rng(1).normal(size=(len(genre), 16)),
                                name="image")
    vbpr = create_model("vbpr", **PARAMS).fit(split.train, item_features=feats)
    bpr = create_model("bpr", **{k: v for k, v in PARAMS.items() if k != "visual_dim"}
                       ).fit(split.train)
    a = evaluate(vbpr, split.train, split.test, metrics="ndcg@10")["NDCG@10"]
    b = evaluate(bpr, split.train, split.test, metrics="ndcg@10")["NDCG@10"]
    assert abs(a - b) < 0.25 * max(a, b), (a, b)


def test_score_is_the_papers_predictor():
    """x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i) + beta'.f_i, by hand."""
    data, genre = genre_world(n_items=60, n_users=40, per_user=6)
    vectors = informative_vectors(genre, dim=5)
    feats = vectors_from_arrays(np.arange(len(genre)), vectors, name="image")
    model = create_model("vbpr", **{**PARAMS, "epochs": 2}).fit(data, item_features=feats)
    m = model.module_
    f = torch.from_numpy(feats.normalized().toarray())  # unit-length rows
    warm = torch.from_numpy(data.item_counts() > 0).float()
    gamma_i = m.item.weight * warm[:, None]
    beta_i = m.item_bias.weight.squeeze(1) * warm
    expected = (m.user.weight @ gamma_i.T + m.user_visual.weight @ (f @ m.projection.weight).T
                + beta_i + (f @ m.visual_bias.weight).squeeze(1))
    got = model.score(np.arange(data.n_users))
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-5)


def test_mixed_features_split_into_a_dense_block_and_bagged_words():
    """Words beside a dense vector: the vector's columns become a dense block, the words
    stay bagged, and E f_i, beta'.f_i and their gradients equal the plain product f E."""
    import scipy.sparse as sp

    from recforge.models.vbpr import _VBPRModule

    rng = np.random.default_rng(0)
    n, n_words, dim = 50, 40, 6
    words = sp.random(n, n_words, density=0.05, random_state=1, format="csr")
    vector = rng.normal(size=(n, dim))
    vector[3] = 0.0  # an item without a vector: a dense column need not be full
    f = sp.hstack([words, sp.csr_matrix(vector)]).tocsr()
    m = _VBPRModule(7, n, f, 4, 3, np.ones(n), 0.1, torch.Generator().manual_seed(0))
    assert m.dense_cols.tolist() == list(range(n_words, n_words + dim))
    assert len(m.f_indices) == words.nnz  # only the words are bagged
    dense = torch.from_numpy(f.toarray()).float()
    items = torch.tensor([[0, 3], [49, 7]])
    for rows, which in ((None, slice(None)), (items, items)):
        vec, bias = m.content(rows)
        torch.testing.assert_close(vec, (dense @ m.projection.weight)[which])
        torch.testing.assert_close(bias, (dense @ m.visual_bias.weight).squeeze(-1)[which])
    vec, bias = m.content(items)
    (vec.sum() + bias.sum()).backward()
    got = m.projection.weight.grad.clone(), m.visual_bias.weight.grad.clone()
    m.zero_grad()
    sel = dense[items.reshape(-1)]
    ((sel @ m.projection.weight).sum() + (sel @ m.visual_bias.weight).sum()).backward()
    torch.testing.assert_close(got[0], m.projection.weight.grad)
    torch.testing.assert_close(got[1], m.visual_bias.weight.grad)


def test_cold_items_survive_save_and_load(tmp_path):
    data, genre = genre_world(n_items=80, n_users=60, per_user=8)
    split = cold_start_items(data, test_size=0.25, seed=0)
    feats = F.combine(vectors_from_arrays(np.arange(len(genre)), informative_vectors(genre),
                                          name="image"),
                      F.categorical(Vocabulary(np.arange(len(genre))),
                                    [f"g{g}" for g in genre], "genres"))
    model = create_model("vbpr", **{**PARAMS, "epochs": 3, "feature_weights": {"image": 2.0}}
                         ).fit(split.train, item_features=feats)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert torch.equal(loaded.score(np.arange(10)), model.score(np.arange(10)))
    cold = np.unique(split.test.item)
    assert torch.all(model.score(np.arange(3))[:, cold] != 0)
    assert loaded.similar_items(data.items.ids[cold[:1]], k=3).shape[0] == 3


def test_vbpr_needs_item_features_and_checks_its_parameters():
    data, _ = genre_world(n_items=30, n_users=10, per_user=3)
    with pytest.raises(ConfigError, match="item_features"):
        create_model("vbpr", **PARAMS).fit(data)
    feats = vectors_from_arrays(np.arange(30), np.ones((30, 4)), name="image")
    for bad in ({"visual_dim": 0}, {"reg_visual": -1.0}, {"id_dropout": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            create_model("vbpr", **{**PARAMS, **bad}).fit(data, item_features=feats)
