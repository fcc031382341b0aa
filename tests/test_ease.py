"""EASE: the fitted weights against the closed form in float64, the blockwise Gram matrix,
and the early refusal of a catalogue whose dense inverse would not fit in memory."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_interactions

from recforge.errors import ModelError
from recforge.models import ease as ease_module
from recforge.models.ease import EASE, _dense_gram, ease_peak_bytes


def _reference(x: np.ndarray, reg: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + reg * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("binary", [True, False])
def test_weights_match_closed_form(binary):
    data = random_interactions(seed=1)
    rng = np.random.default_rng(0)
    data = data.with_values(rng.integers(1, 6, len(data)).astype(np.float32))
    model = EASE(reg=5.0, binary=binary).fit(data)
    x = model.seen_.toarray().astype(np.float64)
    if binary:
        x = (x != 0).astype(np.float64)
    np.testing.assert_allclose(model.weights_.numpy(), _reference(x, 5.0), atol=2e-5)


def test_dropout_is_edlae_closed_form():
    """dropout p: the L2 penalty on item j's weights is reg + p / (1 - p) * G_jj (Steck
    2020), still with a zero diagonal; forgetting users recomputes it exactly."""
    data = random_interactions(seed=1)
    model = EASE(reg=5.0, dropout=0.25).fit(data)
    x = (model.seen_.toarray() != 0).astype(np.float64)
    g = x.T @ x
    p = np.linalg.inv(g + np.diag(5.0 + (0.25 / 0.75) * np.diag(g)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights_.numpy(), b, atol=2e-5)
    assert not np.allclose(model.weights_.numpy(), _reference(x, 5.0), atol=1e-3)
    users = data.users.ids[:3]
    model.forget_users(users)
    keep = ~np.isin(data.users.ids[data.user], users)
    again = EASE(reg=5.0, dropout=0.25).fit(data.subset(np.flatnonzero(keep)))
    np.testing.assert_allclose(model.weights_.numpy(), again.weights_.numpy(), atol=2e-5)


def test_dense_gram_in_blocks_equals_product():
    x = random_interactions(n_users=50, n_items=23, seed=2).binary_csr
    np.testing.assert_array_equal(_dense_gram(x, block=7).numpy(), (x.T @ x).toarray())


def test_refuses_catalogue_larger_than_memory(monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(ModelError) as err:
        EASE()._check_memory(40_000)  # checks the estimate only: nothing is allocated
    msg = str(err.value)
    need = ease_peak_bytes(40_000) / 2**30
    assert "40,000 items" in msg and f"{need:.1f} GB" in msg and "8.0 GB" in msg
    for alternative in ("gfcf", "bspm", "itemknn", "als"):
        assert alternative in msg


def test_fit_refuses_before_allocating(monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 1)
    model = EASE()
    with pytest.raises(ModelError, match="40 items"):
        model.fit(random_interactions())
    assert not hasattr(model, "weights_")
    monkeypatch.setattr(ease_module, "available_memory", lambda: 1 << 40)
    assert model.fit(random_interactions()).weights_.shape == (40, 40)


def test_peak_estimate_grows_with_the_square():
    assert ease_peak_bytes(40_000) > 3.9 * (ease_peak_bytes(20_000) - ease_peak_bytes(0))
    assert 8 * 40_000**2 < ease_peak_bytes(40_000) < 10 * 40_000**2
