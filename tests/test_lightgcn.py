"""LightGCN: conformance, the normalised adjacency, propagation and its gradient."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from conformance import ModelConformance

from recforge.models import create_model
from recforge.models.lightgcn import _SymmetricSpMM, normalized_adjacency


class TestLightGCN(ModelConformance):
    model_name = "lightgcn"
    params = {"embedding_dim": 16, "epochs": 40, "batch_size": 256, "learning_rate": 0.02,
              "n_layers": 2, "device": "cpu"}

    def test_normalized_adjacency_by_hand(self):
        r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
        a = normalized_adjacency(r).toarray()
        # Degrees: users 2, 1; items 1, 2, 0. Entry (u0, i1) = 1 / sqrt(2 * 2).
        assert a.shape == (5, 5)
        assert np.isclose(a[0, 2 + 1], 0.5) and np.isclose(a[2 + 1, 0], 0.5)
        assert np.isclose(a[0, 2], 1 / np.sqrt(2)) and np.isclose(a[1, 3], 1 / np.sqrt(2))
        assert np.allclose(a, a.T) and a[:2, :2].sum() == 0 and a[4].sum() == 0

    def test_propagation_is_layer_mean(self, random_data):
        model = create_model("lightgcn", **{**self.params, "epochs": 1}).fit(random_data)
        m = model.module_
        adj = torch.from_numpy(normalized_adjacency(random_data.csr).toarray())
        e0 = m.embedding.weight.detach()
        e1 = adj @ e0
        e2 = adj @ e1
        expected = (e0 + e1 + e2) / 3
        assert torch.allclose(m.propagate().detach(), expected, atol=1e-5)
        # Scores use the cached propagation.
        users, items = m.split(expected)
        assert torch.allclose(model.score([0, 1]), users[:2] @ items.T, atol=1e-4)

    def test_symmetric_spmm_gradient(self):
        dense = torch.rand(6, 6)
        dense = (dense + dense.T) * (torch.rand(6, 6) > 0.5)
        dense = (dense + dense.T) / 2
        adj = dense.to_sparse_csr()
        x = torch.randn(6, 3, requires_grad=True)
        _SymmetricSpMM.apply(adj, x).pow(2).sum().backward()
        x2 = x.detach().clone().requires_grad_(True)
        (dense @ x2).pow(2).sum().backward()
        assert torch.allclose(x.grad, x2.grad, atol=1e-5)
