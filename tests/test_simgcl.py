"""SimGCL, XSimGCL and LightGCN++: conformance, the normalisation, the noise, InfoNCE and
the losses against the papers' formulas written out."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from conformance import ModelConformance

from recforge import ConfigError
from recforge.models import create_model
from recforge.models.lightgcn import _SpMM, normalized_adjacency
from recforge.models.simgcl import info_nce

FAST = {"embedding_dim": 16, "epochs": 40, "batch_size": 256, "learning_rate": 0.02,
        "n_layers": 2, "device": "cpu"}


class TestSimGCL(ModelConformance):
    # (with two views of the same clean propagation, InfoNCE's uniformity pull outweighs
    # BPR on the 20-item checkerboard at cl_rate 0.1: the oracle needs a lighter weight)
    model_name = "simgcl"
    params = {**FAST, "eps": 0.1, "cl_rate": 0.05}


class TestXSimGCL(ModelConformance):
    model_name = "xsimgcl"
    params = {**FAST, "eps": 0.1, "cl_rate": 0.1}


class TestLightGCNpp(ModelConformance):
    """lightgcn with LightGCN++'s options (the study's ml-1m settings)."""
    model_name = "lightgcn"
    params = {**FAST, "alpha": 0.4, "beta": 0.1, "gamma": 0.0, "unit_norm": True}


def test_adjacency_exponents_by_hand():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    a = normalized_adjacency(r, alpha=0.4, beta=0.1).toarray()
    # degrees: users 2, 1; items 1, 2, 0. Entry (receiver, sender) = 1 / (d_r^0.4 d_s^0.1)
    assert np.isclose(a[0, 2 + 1], 1 / (2**0.4 * 2**0.1))
    assert np.isclose(a[2 + 1, 1], 1 / (2**0.4 * 1**0.1))
    assert np.isclose(a[1, 2 + 1], 1 / (1**0.4 * 2**0.1))
    assert not np.allclose(a, a.T) and a[4].sum() == 0 and a[:, 4].sum() == 0
    # 0.5 / 0.5 is LightGCN's symmetric matrix
    assert np.allclose(normalized_adjacency(r).toarray(),
                       normalized_adjacency(r, 0.5, 0.5).toarray())


def test_spmm_gradient_is_transpose_product():
    dense = torch.rand(6, 6) * (torch.rand(6, 6) > 0.4)
    x = torch.randn(6, 3, requires_grad=True)
    _SpMM.apply(dense.to_sparse_csr(), dense.T.contiguous().to_sparse_csr(), x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (dense @ x2).pow(2).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)


def test_lightgcnpp_propagation_by_hand(random_data):
    params = {**FAST, "epochs": 1, "alpha": 0.6, "beta": -0.1, "gamma": 0.3, "unit_norm": True}
    model = create_model("lightgcn", **params).fit(random_data)
    m = model.module_
    adj = torch.from_numpy(normalized_adjacency(random_data.csr, 0.6, -0.1).toarray())
    e0 = m.embedding.weight.detach()
    e1 = adj @ F.normalize(e0, dim=1)
    e2 = adj @ F.normalize(e1, dim=1)
    expected = 0.3 * e0 + 0.7 * (e1 + e2) / 2
    assert torch.allclose(m.propagate().detach(), expected, atol=1e-5)
    users, items = m.split(expected)
    assert torch.allclose(model.score([0, 1]), users[:2] @ items.T, atol=1e-4)


def test_noise_is_sign_aligned_with_length_eps(random_data):
    model = create_model("xsimgcl", **{**FAST, "epochs": 1}).fit(random_data)
    m = model.module_
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean1 = m.step(m.embedding.weight)
        noisy = m.layers(0.3, gen)
    delta = noisy[1] - clean1
    live = clean1.abs() > 0  # rows of nodes without events propagate zeros: sign 0
    assert torch.allclose(delta.norm(dim=1)[live.all(1)], torch.tensor(0.3), atol=1e-5)
    assert (torch.sign(delta[live]) == torch.sign(clean1[live])).all()
    # the noisy layer 1 is what layer 2 propagates, and layer 2 gets its own noise
    with torch.no_grad():
        prop2 = m.step(noisy[1])
    delta2 = noisy[2] - prop2
    live2 = (prop2.abs() > 0).all(1)
    assert torch.allclose(delta2.norm(dim=1)[live2], torch.tensor(0.3), atol=1e-5)
    assert (torch.sign(delta2[live2]) == torch.sign(prop2[live2])).all()


def test_info_nce_by_hand():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 4, generator=gen), torch.randn(7, 4, generator=gen)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    logits = (an @ bn.T / 0.2).numpy()
    expected = -np.mean([np.log(np.exp(logits[r, r]) / np.exp(logits[r]).sum())
                         for r in range(7)])
    assert np.isclose(float(info_nce(a, b, 0.2)), expected, atol=1e-5)
    # identical, well-separated views are near zero; the loss falls as tau does
    eye = torch.eye(5)
    assert float(info_nce(eye, eye, 0.05)) < 1e-6


def _batch(model, n=32):
    rng = np.random.default_rng(0)
    return {"users": torch.from_numpy(rng.integers(0, model.n_users, n)),
            "items": torch.from_numpy(rng.integers(0, model.n_items, n)),
            "negatives": torch.from_numpy(rng.integers(0, model.n_items, (n, 1)))}


def test_xsimgcl_loss_is_bpr_plus_contrast_of_layer_l_star(random_data):
    params = {**FAST, "epochs": 1, "n_layers": 3, "l_star": 2, "cl_rate": 0.3, "tau": 0.25,
              "eps": 0.15, "reg": 1e-3, "n_negatives": 1}
    model = create_model("xsimgcl", **params).fit(random_data)
    m = model.module_
    batch = _batch(model)
    model._noise_gen = torch.Generator().manual_seed(5)
    loss = float(model.training_loss(batch).detach())
    layers = m.layers(0.15, torch.Generator().manual_seed(5))
    final = (layers[1] + layers[2] + layers[3]) / 3  # gamma 0: layer 0 skipped
    u, i = batch["users"], batch["items"] + m.n_users
    j = batch["negatives"][:, 0] + m.n_users
    ego = m.embedding.weight
    bpr = -F.logsigmoid((final[u] * final[i]).sum(1) - (final[u] * final[j]).sum(1)).mean()
    l2 = 0.5 * (ego[u].pow(2).sum() + ego[i].pow(2).sum() + ego[j].pow(2).sum()) / len(u)
    uu, ii = torch.unique(u), torch.unique(i)
    cl = info_nce(final[uu], layers[2][uu], 0.25) + info_nce(final[ii], layers[2][ii], 0.25)
    assert np.isclose(loss, float((bpr + 1e-3 * l2 + 0.3 * cl).detach()), atol=1e-5)


def test_simgcl_contrasts_two_perturbed_views(random_data):
    params = {**FAST, "epochs": 1, "cl_rate": 0.5, "tau": 0.2, "eps": 0.1, "reg": 0.0,
              "n_negatives": 1}
    model = create_model("simgcl", **params).fit(random_data)
    m = model.module_
    batch = _batch(model)
    model._noise_gen = torch.Generator().manual_seed(9)
    loss = float(model.training_loss(batch).detach())
    # reg 0: the clean BPR term alone
    bpr = float(model.bpr_loss(m.propagate(), batch).detach())
    gen = torch.Generator().manual_seed(9)
    v1, v2 = m.pool(m.layers(0.1, gen)), m.pool(m.layers(0.1, gen))
    uu, ii = torch.unique(batch["users"]), torch.unique(batch["items"]) + m.n_users
    cl = info_nce(v1[uu], v2[uu], 0.2) + info_nce(v1[ii], v2[ii], 0.2)
    assert np.isclose(loss, bpr + 0.5 * float(cl.detach()), atol=1e-5)
    # scoring uses a clean propagation (no noise in the cached embeddings)
    users, _ = m.split(m.propagate())
    assert torch.allclose(model.user_embeddings_, users.detach(), atol=1e-6)


@pytest.mark.parametrize("name, params, field", [
    ("xsimgcl", {"n_layers": 2, "l_star": 3}, "l_star"),
    ("lightgcn", {"alpha": 9.0}, "alpha"),
    ("lightgcn", {"gamma": 1.5}, "gamma"),
    ("lightgcn", {"unit_norm": "yes"}, "unit_norm"),
    ("simgcl", {"tau": 0.0}, "tau"),
    ("simgcl", {"eps": -0.1}, "eps"),
    ("xsimgcl", {"cl_rate": float("nan")}, "cl_rate"),
])
def test_bad_params_name_the_field(random_data, name, params, field):
    with pytest.raises(ConfigError, match=field):
        create_model(name, **{**FAST, "epochs": 1, **params}).fit(random_data)


def test_no_contrast_is_lightgcn_with_gamma(random_data):
    """cl_rate 0 and eps 0: xsimgcl trains exactly as lightgcn with the same pooling and
    normalisation (LightGCN++'s, xsimgcl's default)."""
    common = {**FAST, "epochs": 2, "n_negatives": 1, "gamma": 0.0, "reg": 1e-4,
              "alpha": 0.4, "beta": 0.1, "unit_norm": True}
    a = create_model("xsimgcl", **common, cl_rate=0.0, eps=0.0).fit(random_data)
    b = create_model("lightgcn", **common).fit(random_data)
    assert torch.allclose(a.score([0, 1, 2]), b.score([0, 1, 2]), atol=1e-5)


def test_cl_rows_caps_the_contrasted_rows(random_data):
    model = create_model("xsimgcl", **{**FAST, "epochs": 1, "cl_rows": 5}).fit(random_data)
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(40)
    picked = model._at_most(rows, gen)
    assert len(picked) == 5 and len(torch.unique(picked)) == 5
    assert set(picked.tolist()) <= set(rows.tolist())
    assert torch.equal(model._at_most(rows[:4], gen), rows[:4])
    model.cl_rows = None
    assert torch.equal(model._at_most(rows, gen), rows)
