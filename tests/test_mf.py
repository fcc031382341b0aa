"""Biased MF (ratings) and BPR-MF (implicit): conformance plus model checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conformance import ModelConformance

from recforge import ConfigError, DataError, Interactions
from recforge.evaluation import evaluate
from recforge.models import create_model


def rated(random_data):
    rng = np.random.default_rng(0)
    return random_data.with_values(rng.integers(1, 6, len(random_data)).astype(np.float32))


class TestMF(ModelConformance):
    model_name = "mf"
    params = {"embedding_dim": 8, "epochs": 20, "batch_size": 64, "learning_rate": 0.02,
              "reg": 0.01, "device": "cpu"}

    def training_data(self, data):
        return rated(data)

    def test_checkerboard_oracle(self):
        pytest.skip("mf fits ratings; the oracle needs a ranking objective (tested for bpr)")

    def test_history_oracle(self, random_data):
        """Folding in a trained user's own ratings gives nearly that user's scores."""
        data = rated(random_data)
        model = self.make(epochs=40).fit(data)
        corr = []
        for u in range(5):
            row = data.csr[u]
            recs = model.recommend_for_history(data.items.ids[row.indices], values=row.data,
                                               k=data.n_items, exclude_history=False)
            folded = recs.set_index("item")["score"].reindex(data.items.ids).to_numpy()
            trained = model.score([u])[0].numpy()
            corr.append(np.corrcoef(folded, trained)[0, 1])
        assert np.mean(corr) > 0.5, corr

    def test_save_load_identical(self, random_data, tmp_path):
        data = rated(random_data)
        model = self.make().fit(data)
        from recforge.models import Recommender

        loaded = Recommender.load(model.save(tmp_path / "m"))
        users = data.users.ids[:10]
        items = data.items.ids[:10]
        assert np.array_equal(loaded.predict(users, items), model.predict(users, items))

    def test_deterministic_with_seed(self, random_data):
        data = rated(random_data)
        a = self.make(seed=5).fit(data).predict(data.users.ids[:20], data.items.ids[:20])
        b = self.make(seed=5).fit(data).predict(data.users.ids[:20], data.items.ids[:20])
        assert np.array_equal(a, b)

    def test_empty_input(self, random_data):
        with pytest.raises(DataError):
            self.make().fit(random_data.subset(np.zeros(len(random_data), bool)))

    def test_learns_a_rating_structure(self):
        # Ratings = user offset + item offset: MF must beat the global mean by far.
        rng = np.random.default_rng(1)
        u, i = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
        keep = rng.random(u.shape) < 0.6
        ub, ib = rng.normal(0, 1, 40), rng.normal(0, 1, 30)
        r = np.clip(3 + ub[u] + ib[i], 1, 5)
        frame = pd.DataFrame({"user": u[keep], "item": i[keep], "rating": r[keep]})
        data = Interactions.from_frame(frame)
        from recforge.data.split import random_split

        split = random_split(data, 0.2, seed=0)
        model = create_model("mf", embedding_dim=4, epochs=40, batch_size=64, reg=0.01,
                             learning_rate=0.03).fit(split.train)
        rmse = evaluate(model, split.train, split.test, metrics="rmse")["RMSE"]
        baseline = np.sqrt(np.mean((split.test.value - split.train.value.mean()) ** 2))
        assert rmse < 0.5 * baseline

    def test_predict_clips_and_unknowns(self, random_data):
        data = rated(random_data)
        model = self.make().fit(data)
        pred = model.predict(data.users.ids[:30], data.items.ids[:30])
        assert pred.min() >= 1.0 and pred.max() <= 5.0
        pairs = [data.users.ids[0], "nobody"], [data.items.ids[0], data.items.ids[1]]
        out = model.predict(*pairs, unknown="skip")
        assert np.isfinite(out[0]) and np.isnan(out[1])
        assert np.isfinite(model.predict(*pairs)).all()  # default: the fallback

    def test_needs_ratings(self, random_data):
        with pytest.raises(DataError, match="needs rating values"):
            self.make().fit(random_data)


class TestBPR(ModelConformance):
    model_name = "bpr"
    params = {"embedding_dim": 16, "epochs": 40, "batch_size": 64, "learning_rate": 0.05,
              "reg": 1e-4, "device": "cpu"}

    def test_beats_popularity(self):
        from recforge.data.split import random_split
        from recforge.data.synthetic import make_synthetic

        data = make_synthetic(300, 150, mean_per_user=20, seed=0).interactions
        split = random_split(data.with_values(None), 0.2, by_user=True, seed=0)
        bpr = create_model("bpr", **{**self.params, "epochs": 30, "batch_size": 256,
                                     "learning_rate": 0.02}).fit(split.train)
        pop = create_model("pop").fit(split.train)
        ours = evaluate(bpr, split.train, split.test, metrics="ndcg@10")["NDCG@10"]
        base = evaluate(pop, split.train, split.test, metrics="ndcg@10")["NDCG@10"]
        assert ours > 1.2 * base

    def test_bad_params(self, random_data):
        for bad in ({"embedding_dim": 0}, {"learning_rate": -1.0}, {"optimizer": "rmsprop"},
                    {"n_negatives": 0}, {"device": "tpu:7"}):
            with pytest.raises(ConfigError):
                create_model("bpr", **bad).fit(random_data)


@pytest.mark.parametrize("reg,bias_reg", [(2.5, 0.01), (0.0, 0.0)])
def test_mf_loss_matches_the_expression_it_fuses(reg, bias_reg):
    import torch

    from recforge.models.mf import _BiasedMFLoss

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g)

    p, bu = rand(6, 3).requires_grad_(), rand(6).requires_grad_()
    q_table, bias_table = rand(4, 3).requires_grad_(), rand(4, 1).requires_grad_()
    items = torch.tensor([0, 2, 2, 3, 0, 2])  # repeated items; item 1 never read
    target = rand(6)
    w_user, w_item = rand(6).abs(), rand(4).abs()
    mean = torch.tensor(3.5, dtype=torch.float64)
    inputs = (p, bu, q_table, bias_table)

    def reference(p, bu, q_table, bias_table):
        q, bi, wi = q_table[items], bias_table[items].squeeze(1), w_item[items]
        pred = mean + bu + bi + (p * q).sum(-1)
        factors = (w_user * (p * p).sum(-1) + wi * (q * q).sum(-1)).sum()
        biases = (w_user * bu * bu + wi * bi * bi).sum()
        return (((pred - target) ** 2).mean()
                + (0.5 / len(items)) * (reg * factors + bias_reg * biases))

    def fused(p, bu, q_table, bias_table):
        return _BiasedMFLoss.apply(p, bu, q_table, bias_table, items, target, w_user, w_item,
                                   mean, reg, bias_reg)

    assert fused(*inputs).item() == pytest.approx(reference(*inputs).item(), rel=1e-12)
    got = torch.autograd.grad(fused(*inputs) * 0.7, inputs)
    want = torch.autograd.grad(reference(*inputs) * 0.7, inputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert got[2][1].abs().sum() == 0 and got[2][2].abs().sum() > 0
    assert torch.autograd.gradcheck(fused, inputs)
