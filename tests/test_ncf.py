"""GMF, MLP and NeuMF: conformance, the paper's architecture, rating mode, pre-training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError
from recforge.evaluation import evaluate
from recforge.models import create_model

FAST = {"embedding_dim": 8, "epochs": 25, "batch_size": 128, "learning_rate": 0.02,
        "n_negatives": 2, "device": "cpu"}


class TestGMF(ModelConformance):
    model_name = "gmf"
    params = FAST


class TestMLP(ModelConformance):
    model_name = "mlp"
    params = {**FAST, "layers": (16, 8), "epochs": 40}

    def test_default_architecture(self, random_data):
        model = create_model("mlp", epochs=1, device="cpu").fit(random_data)
        tower = model.module_.towers[0]
        shapes = [(lin.in_features, lin.out_features) for lin in tower.linears]
        assert shapes == [(128, 128), (128, 64)]  # 64 + 64 embedded ids -> 128 -> 64
        assert model.module_.out.in_features == 64

    def test_grid_matches_pairs(self, random_data):
        model = create_model("mlp", **self.params).fit(random_data)
        users = torch.tensor([0, 3])
        full = model.score(users.numpy())
        items = torch.arange(random_data.n_items)
        with torch.no_grad():
            direct = torch.stack([model.module_(u.repeat(len(items)), items) for u in users])
        assert torch.allclose(full, direct, atol=1e-5)

    def test_rating_mode(self, random_data):
        rng = np.random.default_rng(0)
        data = random_data.with_values(rng.integers(1, 6, len(random_data)).astype(np.float32))
        model = create_model("mlp", **{**self.params, "loss": "mse"}).fit(data)
        assert model.predicts_ratings
        pred = model.predict(data.users.ids[:10], data.items.ids[:10])
        assert np.all((pred >= 1) & (pred <= 5))
        assert evaluate(model, data, data, metrics="rmse")["RMSE"] < 1.5


class TestNeuMF(ModelConformance):
    model_name = "neumf"
    params = {**FAST, "mlp_embedding_dim": 8, "layers": (16, 8)}

    def test_pretraining_initialises_from_gmf_and_mlp(self, random_data, monkeypatch):
        captured = {}
        from recforge.models import ncf

        orig = ncf.NeuMF._build

        def spy(self):
            module = orig(self)
            if getattr(self, "_pretrained", None) is not None:
                gmf, mlp = self._pretrained
                captured["gmf_user"] = gmf.towers[0].user.weight.detach().clone()
                captured["init_user"] = module.towers[0].user.weight.detach().clone()
                captured["out"] = module.out.weight.detach().clone()
                captured["gmf_out"] = gmf.out.weight.detach().clone()
            return module

        monkeypatch.setattr(ncf.NeuMF, "_build", spy)
        params = {**self.params, "epochs": 2, "pretrain": True}
        model = create_model("neumf", **params).fit(random_data)
        assert torch.equal(captured["init_user"], captured["gmf_user"])
        d = captured["gmf_out"].shape[1]
        assert torch.allclose(captured["out"][:, :d], 0.5 * captured["gmf_out"])
        assert len(model.history_) == 2

    def test_bad_params(self, random_data):
        for bad in ({"loss": "hinge"}, {"alpha": 2.0}, {"layers": ()}, {"dropout": 1.0}):
            with pytest.raises(ConfigError):
                create_model("neumf", **{**self.params, **bad}).fit(random_data)


def test_neumf_pretraining_is_refused_under_ddp(random_data):
    """Under DDP each rank would pretrain GMF and MLP alone on its shard and then pair rank
    0's item towers with its own user rows: refused before any pretraining (no process
    group needed to see it)."""
    model = create_model("neumf", pretrain=True, epochs=1, embedding_dim=4)
    with pytest.raises(ConfigError, match="pretrain=True is not supported in distributed"):
        model.fit(random_data, distributed=(0, 2), sharded=True)
    assert not model.is_fitted
