"""Surprise-style rating models (baseline, svdpp, knnbaseline): conformance, the baseline
estimates and the kNN prediction checked by hand, and predict's policy for unknown pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError, DataError, Interactions, ModelError
from recforge.models import Recommender, create_model


def rated(data: Interactions) -> Interactions:
    if data.value is not None:
        return data
    rng = np.random.default_rng(0)
    return data.with_values(rng.integers(1, 6, len(data)).astype(np.float32))


class RatingSuite(ModelConformance):
    def fit_model(self, model, data):
        return model.fit(rated(data))

    def test_checkerboard_oracle(self):
        pytest.skip("fits ratings; the checkerboard has none")

    def test_needs_ratings(self, random_data):
        with pytest.raises(DataError, match="needs rating values"):
            self.make().fit(random_data)

    def test_predict_save_load(self, fitted, random_data, tmp_path):
        loaded = Recommender.load(fitted.save(tmp_path / "m"))
        users, items = random_data.users.ids[:20], random_data.items.ids[:20]
        pred = fitted.predict(users, items)
        assert np.array_equal(loaded.predict(users, items), pred)
        assert pred.min() >= 1.0 and pred.max() <= 5.0

    def test_unknown_pairs(self, fitted, random_data):
        u0, i0 = random_data.users.ids[0], random_data.items.ids[0]
        users, items = [u0, "nobody", u0, "nobody"], [i0, i0, "nothing", "nothing"]
        out = fitted.predict(users, items)
        assert np.isfinite(out).all()
        bu, bi = self._biases(fitted)
        mean, (lo, hi) = fitted.mean_, fitted.rating_range_
        assert out[1] == pytest.approx(np.clip(mean + bi[0], lo, hi), abs=1e-5)
        assert out[2] == pytest.approx(np.clip(mean + bu[0], lo, hi), abs=1e-5)
        assert out[3] == pytest.approx(np.clip(mean, lo, hi), abs=1e-5)
        skipped = fitted.predict(users, items, unknown="skip")
        assert skipped[0] == out[0] and np.isnan(skipped[1:]).all()
        with pytest.raises(ModelError, match="3 pair.*'nobody'"):
            fitted.predict(users, items, unknown="error")
        assert np.isfinite(fitted.predict([u0], [i0], unknown="error")).all()
        with pytest.raises(ConfigError, match="unknown must be"):
            fitted.predict(users, items, unknown="drop")

    def _biases(self, model):
        return model.user_bias_, model.item_bias_


class TestBaseline(RatingSuite):
    model_name = "baseline"


class TestBaselineSGD(RatingSuite):
    model_name = "baseline"
    params = {"method": "sgd", "epochs": 5}


class TestKNNBaseline(RatingSuite):
    model_name = "knnbaseline"
    params = {"k": 5, "shrinkage": 10.0, "block_size": 7}


class TestSVDpp(RatingSuite):
    model_name = "svdpp"
    params = {"embedding_dim": 4, "epochs": 3, "batch_size": 64, "device": "cpu"}

    def _biases(self, model):
        m = model.module_
        return (m.user_bias.weight.detach().numpy().ravel(),
                m.item_bias.weight.detach().numpy().ravel())

    def test_implicit_sum(self, fitted, random_data):
        """The batched implicit term is |N(u)|^-1/2 times the sum of y_j over u's items."""
        m = fitted.module_
        users = np.array([3, 0, 3, 7])
        got = m.implicit_sum(torch.from_numpy(users)).detach().numpy()
        y = m.implicit.weight.detach().numpy()
        for row, u in zip(got, users, strict=True):
            items = fitted.seen_[u].indices
            assert np.allclose(row, y[items].sum(0) / np.sqrt(len(items)), atol=1e-6)
        pred = fitted.predict_index(users, np.array([1, 2, 3, 4]))
        p = m.user.weight.detach().numpy()
        q = m.item.weight.detach().numpy()
        bu, bi = self._biases(fitted)
        want = [fitted.mean_ + bu[u] + bi[i] + (p[u] + got[k]) @ q[i]
                for k, (u, i) in enumerate(zip(users, [1, 2, 3, 4], strict=True))]
        assert np.allclose(pred, np.clip(want, 1, 5), atol=1e-5)


# ---------------------------------------------------------------------------------------
def _tiny() -> Interactions:
    frame = pd.DataFrame({"user": ["a", "a", "b", "b", "c", "c", "c", "d"],
                          "item": ["x", "y", "x", "z", "x", "y", "z", "y"],
                          "rating": [5.0, 3.0, 4.0, 2.0, 1.0, 4.0, 5.0, 2.0]})
    return Interactions.from_frame(frame)


def test_baseline_als_by_hand():
    """Two ALS epochs with reg_u = reg_i = 1, written out: items first, then users."""
    data = _tiny()
    model = create_model("baseline", epochs=2, reg_u=1.0, reg_i=1.0).fit(data)
    r = {("a", "x"): 5, ("a", "y"): 3, ("b", "x"): 4, ("b", "z"): 2, ("c", "x"): 1,
         ("c", "y"): 4, ("c", "z"): 5, ("d", "y"): 2}
    mu = sum(r.values()) / len(r)
    bu = {u: 0.0 for u in "abcd"}
    bi = {i: 0.0 for i in "xyz"}
    for _ in range(2):
        for i in "xyz":
            rows = [(u, v) for (u, j), v in r.items() if j == i]
            bi[i] = sum(v - mu - bu[u] for u, v in rows) / (1.0 + len(rows))
        for u in "abcd":
            rows = [(i, v) for (w, i), v in r.items() if w == u]
            bu[u] = sum(v - mu - bi[i] for i, v in rows) / (1.0 + len(rows))
    assert model.mean_ == pytest.approx(mu)
    assert np.allclose(model.user_bias_[data.users.index(list("abcd"))],
                       [bu[u] for u in "abcd"], atol=1e-6)
    assert np.allclose(model.item_bias_[data.items.index(list("xyz"))],
                       [bi[i] for i in "xyz"], atol=1e-6)
    pred = model.predict(["a", "d"], ["z", "x"])
    assert np.allclose(pred, [mu + bu["a"] + bi["z"], mu + bu["d"] + bi["x"]], atol=1e-5)


def test_baseline_sgd_per_rating_is_surprise():
    """batch_size=1 is Surprise's SGD: one step per rating."""
    data = _tiny()
    model = create_model("baseline", method="sgd", epochs=1, batch_size=1,
                         learning_rate=0.1, reg=0.5, seed=3).fit(data)
    order = np.random.default_rng(3).permutation(len(data))
    mu = float(data.value.mean())
    bu, bi = np.zeros(data.n_users), np.zeros(data.n_items)
    for e in order:
        u, i, v = data.user[e], data.item[e], float(data.value[e])
        err = v - mu - bu[u] - bi[i]
        bu[u] += 0.1 * (err - 0.5 * bu[u])
        bi[i] += 0.1 * (err - 0.5 * bi[i])
    assert np.allclose(model.user_bias_, bu, atol=1e-6)
    assert np.allclose(model.item_bias_, bi, atol=1e-6)


def test_knnbaseline_by_hand():
    """pearson_baseline similarities with shrinkage and the k-neighbour prediction,
    written out as loops over the tiny matrix (Surprise's formulas)."""
    data = _tiny()
    shrink, k = 1.0, 1
    model = create_model("knnbaseline", k=k, shrinkage=shrink, epochs=3).fit(data)
    mu, bu, bi = model.mean_, model.user_bias_, model.item_bias_
    n_u, n_i = data.n_users, data.n_items
    rating = np.full((n_u, n_i), np.nan)
    rating[data.user, data.item] = data.value
    z = rating - (mu + bu[:, None] + bi[None, :])
    sim = np.zeros((n_i, n_i))
    for i in range(n_i):
        for j in range(n_i):
            common = [u for u in range(n_u) if not np.isnan(rating[u, i])
                      and not np.isnan(rating[u, j])]
            num = sum(z[u, i] * z[u, j] for u in common)
            den = np.sqrt(sum(z[u, i] ** 2 for u in common) * sum(z[u, j] ** 2 for u in common))
            if den > 0:
                sim[i, j] = num / den * (len(common) - 1) / (len(common) - 1 + shrink)
        sim[i, i] = 1.0
    kept = model.similarity_.toarray()
    assert np.allclose(kept, np.where(sim > 0, sim, 0.0), atol=1e-6)
    users, items = np.repeat(np.arange(n_u), n_i), np.tile(np.arange(n_i), n_u)
    want = []
    for u, i in zip(users, items, strict=True):
        rated = [j for j in range(n_i) if not np.isnan(rating[u, j])]
        top = sorted(rated, key=lambda j: -sim[i, j])[:k]
        pos = [j for j in top if sim[i, j] > 0]
        est = mu + bu[u] + bi[i]
        if pos:
            est += sum(sim[i, j] * z[u, j] for j in pos) / sum(sim[i, j] for j in pos)
        want.append(np.clip(est, 1.0, 5.0))
    assert np.allclose(model.predict_index(users, items), want, atol=1e-5)
    scores = model.score(np.arange(n_u)).numpy().ravel()  # unclipped, for ranking
    assert np.allclose(np.clip(scores, 1.0, 5.0), want, atol=1e-5)


def test_unknown_policy_of_other_models(random_data):
    """Ranking models refuse predict whatever the policy; mf falls back on its mean."""
    knn = create_model("itemknn").fit(random_data)
    for policy in ("baseline", "skip", "error"):
        with pytest.raises(ModelError, match="does not predict ratings"):
            knn.predict(random_data.users.ids[:2], random_data.items.ids[:2], unknown=policy)
    mf = create_model("mf", embedding_dim=4, epochs=1, device="cpu").fit(rated(random_data))
    out = mf.predict([random_data.users.ids[0], "nobody"], random_data.items.ids[:2])
    assert np.isfinite(out).all() and out[1] == pytest.approx(mf.mean_, abs=1e-5)


def test_names():
    from recforge.models.registry import resolve_name

    assert resolve_name("SVD++") == "svdpp"
    assert resolve_name("BaselineOnly") == "baseline"
    assert resolve_name("KNNBaseline") == "knnbaseline"


def test_cli_predict_unknown(tmp_path, capsys):
    from conftest import run_cli

    data = tmp_path / "r.csv"
    data.write_text("user,item,rating\n1,10,5\n1,11,3\n2,10,4\n2,12,2\n3,11,4\n")
    model = tmp_path / "m"
    assert run_cli(["train", "KNNBaseline", "--data", data, "--out", model], capsys)[0] == 0
    pairs = tmp_path / "p.csv"
    pairs.write_text("user,item\n1,12\n9,10\n9,99\n")
    out = tmp_path / "o.csv"
    code, _, err = run_cli(["predict", "--model", model, "--pairs", pairs, "--out", out], capsys)
    got = pd.read_csv(out)
    assert code == 0 and len(got) == 3 and got["prediction"].notna().all(), err
    code, _, err = run_cli(["predict", "--model", model, "--pairs", pairs, "--out", out,
                            "--unknown", "skip"], capsys)
    assert code == 0 and pd.read_csv(out)[["user", "item"]].values.tolist() == [[1, 12]]
    code, _, err = run_cli(["predict", "--model", model, "--pairs", pairs, "--out", out,
                            "--unknown", "error"], capsys)
    assert code != 0 and "2 pair(s)" in err and "(9, 99)" in err
    code, _, err = run_cli(["predict", "--model", model, "--pairs", pairs, "--out", out,
                            "--unknown", "drop"], capsys)
    assert code != 0 and "--unknown must be" in err


def test_sgd_divergence_is_a_model_error():
    with pytest.raises(ModelError, match="diverged"):
        create_model("baseline", method="sgd", learning_rate=1e30).fit(_tiny())
