"""Implicit ALS: the conformance suite plus solver, loss and parameter checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conformance import ModelConformance, checkerboard

import recforge.models.als as als_module
from recforge import ConfigError, DataError, Interactions
from recforge.models import create_model
from recforge.models.als import ALS

# Until registry.py lists the model, register it here so create_model("als") works.

# Frequency-scaled reg as in the defaults: lam_u = reg * (n_u + alpha * n_u).
SMALL = {"embedding_dim": 8, "epochs": 8, "reg": 0.01, "alpha": 10.0, "reg_exponent": 1.0,
         "device": "cpu"}


class TestALS(ModelConformance):
    model_name = "als"
    params = SMALL


def test_registered_name():
    assert ALS.name == "als"
    assert isinstance(create_model("als"), ALS)


@pytest.mark.parametrize("reg, reg_exponent", [(1.0, 0.0), (0.05, 0.5)])
def test_cg_matches_cholesky(random_data, reg, reg_exponent):
    """Both solvers minimise the same loss: after the same number of epochs, many CG
    steps give the exact (Cholesky) factors (same reg for every row, and scaled)."""
    params = {**SMALL, "epochs": 3, "reg_exponent": reg_exponent, "reg": reg}
    exact = ALS(solver="cholesky", **params).fit(random_data)
    cg = ALS(solver="cg", cg_steps=40, **params).fit(random_data)
    assert torch.allclose(cg.user_factors_, exact.user_factors_, atol=2e-4)
    assert torch.allclose(cg.item_factors_, exact.item_factors_, atol=2e-4)
    users = np.arange(random_data.n_users)
    assert torch.allclose(cg.score(users), exact.score(users), atol=1e-3)


def test_cholesky_blocks_do_not_change_results(random_data, monkeypatch):
    """Memory-bounded blocks (here a few rows each) give the same factors as one block."""

    params = {**SMALL, "solver": "cholesky", "epochs": 2}
    whole = ALS(**params).fit(random_data)
    monkeypatch.setattr(als_module, "CHOLESKY_BLOCK_ELEMENTS", 8 * 8 * 3)
    blocked = ALS(**params).fit(random_data)
    assert torch.allclose(blocked.user_factors_, whole.user_factors_, atol=1e-5)
    assert torch.allclose(blocked.item_factors_, whole.item_factors_, atol=1e-5)


@pytest.mark.parametrize("reg_weight", ["observed", "total"])
def test_cholesky_solves_normal_equations(random_data, reg_weight):
    """The exact item factors satisfy A_i y_i = b_i for the final user factors (checked
    densely in float64), with non-binary confidences and frequency-scaled reg: the weight
    of an item is its observed cells' confidences, or every cell's (``"total"``)."""
    counts = np.random.default_rng(1).integers(1, 5, len(random_data)).astype(np.float32)
    data = random_data.with_values(counts)
    alpha, reg, nu = 3.0, 0.01, 1.0
    model = ALS(solver="cholesky", embedding_dim=6, epochs=2, alpha=alpha, reg=reg,
                reg_exponent=nu, reg_weight=reg_weight, binary=False, device="cpu"
                ).fit(data)
    x = model.user_factors_.double().numpy()
    y = model.item_factors_.double().numpy()
    r = data.csr.toarray().astype(np.float64)
    c = 1.0 + alpha * r
    p = (r > 0).astype(np.float64)
    for i in range(data.n_items):
        weight = c[:, i].sum() if reg_weight == "total" else c[:, i][p[:, i] > 0].sum()
        lam = reg * max(weight, 1.0) ** nu
        a = x.T @ (c[:, i:i + 1] * x) + lam * np.eye(x.shape[1])
        b = x.T @ (c[:, i] * p[:, i])
        assert np.allclose(a @ y[i], b, atol=1e-4 * max(1.0, np.abs(b).max()))


def test_cg_satisfies_normal_equations_closely(random_data):
    """Warm-started CG with the default 3 steps ends near the exact solve: the item
    factors' relative residual is small after a few epochs."""
    model = ALS(**{**SMALL, "epochs": 6}).fit(random_data)
    x = model.user_factors_.double().numpy()
    y = model.item_factors_.double().numpy()
    p = random_data.binary_csr.toarray().astype(np.float64)
    c = 1.0 + model.alpha * p
    res, norm = 0.0, 0.0
    for i in range(random_data.n_items):
        lam = model.reg * c[:, i].sum()
        a = x.T @ (c[:, i:i + 1] * x) + lam * np.eye(x.shape[1])
        b = x.T @ (c[:, i] * p[:, i])
        res += float(np.sum((a @ y[i] - b) ** 2))
        norm += float(np.sum(b ** 2))
    assert np.sqrt(res / norm) < 0.05


def test_loss_decreases_and_matches_dense(random_data):
    losses = []
    for epochs in (1, 2, 3, 5, 8):
        model = ALS(**{**SMALL, "epochs": epochs}).fit(random_data)
        losses.append(model.loss())
    assert (np.diff(losses) < 0).all(), losses
    # The fast loss equals the objective written out over every cell.
    x = model.user_factors_.double().numpy()
    y = model.item_factors_.double().numpy()
    p = random_data.binary_csr.toarray().astype(np.float64)
    c = 1.0 + model.alpha * p
    observed = np.where(p > 0, c, 0.0)  # the default reg_weight: observed cells' weight
    lam_u, lam_i = model.reg * observed.sum(1), model.reg * observed.sum(0)
    dense = float((c * (p - x @ y.T) ** 2).sum() + lam_u @ (x ** 2).sum(1)
                  + lam_i @ (y ** 2).sum(1))
    assert model.loss() == pytest.approx(dense, rel=1e-5)


def test_scores_follow_structure():
    """On a full checkerboard (two communities by parity), same-parity cells score near 1
    and the others near 0."""
    train, test = checkerboard(30)
    model = ALS(**SMALL).fit(train)
    scores = model.score(np.arange(30)).numpy()
    same = (np.arange(30)[:, None] + np.arange(30)[None, :]) % 2 == 0
    assert scores[same].mean() > 0.5 > scores[~same].mean()


def test_similar_items_follow_structure():
    train, _ = checkerboard(20)
    model = ALS(**SMALL).fit(train)
    sims = model.similar_items(["item0", "item1"], k=5)
    for item, grp in sims.groupby("item"):
        parity = int(item[4:]) % 2
        assert all(int(s[4:]) % 2 == parity for s in grp["similar"])


def test_binary_false_uses_values(random_data):
    heavy = random_data.with_values(np.where(np.arange(len(random_data)) % 3 == 0, 20.0, 1.0)
                                    .astype(np.float32))
    a = ALS(**SMALL, binary=True).fit(heavy)
    b = ALS(**SMALL, binary=False).fit(heavy)
    users = np.arange(heavy.n_users)
    assert not torch.allclose(a.score(users), b.score(users))
    assert torch.equal(a.score(users), ALS(**SMALL).fit(random_data).score(users))
    negative = random_data.with_values(-np.ones(len(random_data), np.float32))
    with pytest.raises(DataError, match=">= 0"):
        ALS(**SMALL, binary=False).fit(negative)


def test_seed_changes_factors(random_data):
    a = ALS(**SMALL, seed=1).fit(random_data)
    b = ALS(**SMALL, seed=2).fit(random_data)
    assert not torch.equal(a.item_factors_, b.item_factors_)


def test_users_without_history():
    # A user known to the vocabulary but absent from training gets zero factors.
    full = Interactions.from_frame(pd.DataFrame({"user": ["a", "b", "c"],
                                                 "item": ["x", "y", "z"]}))
    train = full.subset(np.array([True, True, False]))
    for solver in ("cg", "cholesky"):
        model = ALS(**SMALL, solver=solver).fit(train)
        c = train.users.index(["c"])[0]
        assert torch.allclose(model.user_factors_[c], torch.zeros(8), atol=1e-6)
        assert torch.isfinite(model.item_factors_).all()


@pytest.mark.parametrize("param, value", [
    ("embedding_dim", 0), ("embedding_dim", 2.5), ("epochs", 0), ("epochs", True),
    ("reg", -1.0), ("reg", "big"), ("alpha", -0.5), ("alpha", float("nan")),
    ("solver", "lu"), ("cg_steps", 0), ("binary", "yes"), ("reg_exponent", -1.0),
    ("reg_exponent", 3.0), ("seed", 1.5), ("device", "tpu"),
])
def test_bad_params(random_data, param, value):
    with pytest.raises(ConfigError, match=param):
        ALS(**{**SMALL, param: value}).fit(random_data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_unavailable(random_data):
    with pytest.raises(ConfigError, match="CUDA"):
        ALS(**{**SMALL, "device": "cuda"}).fit(random_data)
    assert ALS(**{**SMALL, "device": "auto"}).fit(random_data).device_ == torch.device("cpu")



def test_alpha_or_reg_that_overflow_float32_is_a_model_error():
    """alpha or reg near float32's maximum overflowed the normal equations: the model
    trained to non-finite factors and scored -3.4e38 without a word."""
    from conftest import random_interactions

    from recforge import ModelError

    data = random_interactions(30, 20, seed=1)
    for params in ({"alpha": 3e38}, {"reg": 3e38}):
        with pytest.raises(ModelError, match="non-finite factors"):
            create_model("als", epochs=2, **params).fit(data)


def test_observed_weight_does_not_grow_with_the_catalogue():
    """With ``reg_weight="observed"`` (the default) a user's penalty depends on the user's
    own events only: adding 10,000 items nobody touched leaves it as it was, where the
    total weight (every cell's confidence) grows it by the catalogue size. That growth made
    the old default over-regularise sparse 40,000-item logs into popularity."""
    mat = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    wide = sp.hstack([mat, sp.csr_matrix((2, 10_000), dtype=np.float32)]).tocsr()
    cpu = torch.device("cpu")
    for weight, grows in (("observed", False), ("total", True)):
        small = als_module._Side(mat, 10.0, True, 0.05, 1.0, weight, cpu).reg
        large = als_module._Side(wide, 10.0, True, 0.05, 1.0, weight, cpu).reg
        assert torch.equal(small, large) != grows
    small = als_module._Side(mat, 10.0, True, 0.05, 1.0, "observed", cpu).reg
    assert torch.allclose(small, torch.tensor([0.05 * 22, 0.05 * 11]))


def test_models_saved_before_reg_weight_load_with_the_total_weight(tmp_path, random_data):
    """An artefact whose params predate ``reg_weight`` was trained with the total weight;
    it must load with that, so its fold-in scores stay what they were."""
    model = ALS(**SMALL, reg_weight="total").fit(random_data)
    path = model.save(tmp_path / "m")
    meta = json.loads((path / "meta.json").read_text())
    del meta["params"]["reg_weight"]
    (path / "meta.json").write_text(json.dumps(meta))
    loaded = ALS.load(path)
    assert loaded.reg_weight == "total"
    items = np.asarray(random_data.item[:5])
    assert np.allclose(loaded._score_history(items, None), model._score_history(items, None))
