"""GF-CF and BSPM: the conformance suite (dense and factored forms) plus their formulas
checked against dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import ModelConformance
from conftest import random_interactions

from recforge import ConfigError
from recforge.models import Recommender, create_model
from recforge.models.graphfilter import normalized_graph, top_right_singular_vectors


class TestGFCF(ModelConformance):
    model_name = "gfcf"
    params = {"factor_dim": 8}


class TestGFCFFactored(ModelConformance):
    model_name = "gfcf"
    params = {"factor_dim": 8, "dense_items": 0}


class TestBSPM(ModelConformance):
    model_name = "bspm"
    params = {"factor_dim": 8, "sharpen_solver": "rk4"}


class TestBSPMFactored(ModelConformance):
    model_name = "bspm"
    params = {"factor_dim": 8, "dense_items": 0, "point_combination": True}


# -- references ------------------------------------------------------------------------------
def _dense_reference(data, k: int):
    """Dense numpy ``L = R~^T R~`` and ``P = D^-1/2 V_k V_k^T D^1/2`` (exact SVD)."""
    x = data.binary_csr.toarray().astype(np.float64)
    du, di = x.sum(1), x.sum(0)
    rt = x / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    lin = rt.T @ rt
    vt = np.linalg.svd(rt, full_matrices=False)[2][:k]
    ideal = (vt.T / np.sqrt(di)[:, None]) @ vt * np.sqrt(di)[None, :]
    return x, lin, ideal


@pytest.fixture(scope="module")
def data():
    return random_interactions(n_users=70, n_items=50, density=0.12, seed=3)


def _scores(model, data) -> np.ndarray:
    return model.score(np.arange(data.n_users)).numpy().astype(np.float64)


@pytest.mark.parametrize("dense_items", [8192, 0])
def test_gfcf_is_the_linear_plus_the_ideal_filter(data, dense_items):
    k = 10  # k + oversampling >= 50 items: the subspace iteration is exact
    x, lin, ideal = _dense_reference(data, k)
    for alpha in (0.0, 0.7):
        model = create_model("gfcf", factor_dim=k, alpha=alpha,
                             dense_items=dense_items).fit(data)
        assert model.dense_ == bool(dense_items)
        np.testing.assert_allclose(_scores(model, data), x @ (lin + alpha * ideal),
                                   rtol=1e-4, atol=1e-5)


def test_randomized_singular_vectors_match_the_exact_ones():
    rng = np.random.default_rng(0)
    # a matrix with a clear spectral gap after 12 values, larger than k + oversampling
    a = (rng.normal(size=(400, 12)) * np.linspace(10, 5, 12)) @ rng.normal(size=(12, 300))
    a += 0.05 * rng.normal(size=a.shape)
    import scipy.sparse as sp

    vt = top_right_singular_vectors(sp.csr_matrix(a.astype(np.float32)), 12, 4, seed=1)
    exact = np.linalg.svd(a, full_matrices=False)[2][:12]
    # same subspace: the projections agree
    np.testing.assert_allclose(vt.T @ vt, exact.T @ exact, atol=1e-4)
    again = top_right_singular_vectors(sp.csr_matrix(a.astype(np.float32)), 12, 4, seed=1)
    assert np.array_equal(vt, again)


def test_normalized_graph_keeps_items_without_events_at_zero(data):
    x = data.binary_csr.copy()
    x = x[:, :-1]  # drop the last item column, then add an empty one back
    import scipy.sparse as sp

    x = sp.hstack([x, sp.csr_matrix((x.shape[0], 1), dtype=np.float32)]).tocsr()
    rt, di = normalized_graph(x)
    assert di[-1] == 0 and rt[:, -1].nnz == 0 and np.isfinite(rt.data).all()


@pytest.mark.parametrize("dense_items", [8192, 0])
def test_bspm_without_sharpening_is_gfcf(data, dense_items):
    common = {"factor_dim": 10, "dense_items": dense_items}
    bspm = create_model("bspm", idl_beta=0.4, sharpen_time=0.0, **common).fit(data)
    gfcf = create_model("gfcf", alpha=0.4, **common).fit(data)
    np.testing.assert_allclose(_scores(bspm, data), _scores(gfcf, data), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dense_items", [8192, 0])
def test_bspm_steps_are_the_closed_forms(data, dense_items):
    k, beta, tb, ts = 10, 0.3, 0.8, 1.7
    x, lin, ideal = _dense_reference(data, k)
    eye = np.eye(lin.shape[0])
    blurred = x @ (eye + tb * (lin - eye))  # one Euler step of dr/dt = r (L - I)
    common = {"factor_dim": k, "dense_items": dense_items, "idl_beta": beta,
              "blur_time": tb, "sharpen_time": ts}
    # early merge, one Euler step of dr/dt = -r L
    euler = create_model("bspm", **common).fit(data)
    y0 = blurred + beta * x @ ideal
    np.testing.assert_allclose(_scores(euler, data), y0 @ (eye - ts * lin), rtol=1e-4,
                               atol=1e-5)
    # RK4 in two steps: each the 4th-order Taylor polynomial of exp(-h L)
    rk4 = create_model("bspm", sharpen_solver="rk4", sharpen_steps=2, **common).fit(data)
    h = ts / 2
    a = -h * lin
    step = eye + a + a @ a / 2 + a @ a @ a / 6 + a @ a @ a @ a / 24
    np.testing.assert_allclose(_scores(rk4, data), y0 @ step @ step, rtol=1e-4, atol=1e-5)
    # late merge: sharpen the blurred rows, add the ideal filter after
    late = create_model("bspm", early_merge=False, **common).fit(data)
    np.testing.assert_allclose(_scores(late, data),
                               blurred @ (eye - ts * lin) + beta * x @ ideal,
                               rtol=1e-4, atol=1e-5)
    # point combination: the mean of the blurred state and the sharpened one
    mean = create_model("bspm", point_combination=True, **common).fit(data)
    np.testing.assert_allclose(_scores(mean, data),
                               (blurred + y0 @ (eye - ts * lin)) / 2, rtol=1e-4, atol=1e-5)


def test_dense_and_factored_forms_agree(data):
    params = {"factor_dim": 12, "sharpen_solver": "rk4", "blur_steps": 2,
              "blur_solver": "rk4", "sharpen_steps": 3, "point_combination": True}
    dense = create_model("bspm", **params).fit(data)
    factored = create_model("bspm", dense_items=0, **params).fit(data)
    assert dense.dense_ and not factored.dense_
    np.testing.assert_allclose(_scores(dense, data), _scores(factored, data), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("name", ["gfcf", "bspm"])
@pytest.mark.parametrize("dense_items", [8192, 0])
def test_history_scores_like_the_trained_user(data, name, dense_items):
    model = create_model(name, factor_dim=8, dense_items=dense_items).fit(data)
    u = 5
    items = data.csr[u].indices
    row = model._score_history(items, None)
    assert torch.allclose(row, model.score([u])[0], rtol=1e-5, atol=1e-6)
    recs = model.recommend_for_history(data.items.ids[items], k=5)
    assert recs["item"].tolist() == model.recommend([data.users.ids[u]], k=5)["item"].tolist()


def test_factored_save_load_round_trip(data, tmp_path):
    model = create_model("bspm", factor_dim=9, dense_items=0, sharpen_solver="rk4").fit(data)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert not loaded.dense_ and loaded.vt_.shape == (9, data.n_items)
    users = np.arange(data.n_users)
    assert torch.equal(loaded.score(users), model.score(users))


@pytest.mark.parametrize(("name", "param", "value"), [
    ("gfcf", "factor_dim", 0), ("gfcf", "alpha", -0.1), ("gfcf", "svd_iters", 1000),
    ("gfcf", "dense_items", -1), ("bspm", "sharpen_solver", "rk5"),
    ("bspm", "blur_steps", 0), ("bspm", "sharpen_time", -1.0), ("bspm", "idl_beta", "0.2"),
    ("bspm", "early_merge", 1), ("bspm", "sharpen_steps", 10**6)])
def test_bad_params_name_the_parameter(data, name, param, value):
    with pytest.raises(ConfigError, match=param):
        create_model(name, **{param: value}).fit(data)


def test_factor_dim_beyond_the_catalogue_is_clipped(data):
    model = create_model("gfcf", factor_dim=500, alpha=0.3).fit(data)
    assert model.vt_.shape == (data.n_items, data.n_items)
    # every singular vector: the ideal filter is the identity on items with events
    x = data.binary_csr.toarray()
    ideal = model.score(np.arange(data.n_users)) - create_model(
        "gfcf", alpha=0.0).fit(data).score(np.arange(data.n_users))
    np.testing.assert_allclose(ideal.numpy(), 0.3 * x, atol=1e-4)
