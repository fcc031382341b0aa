"""recforge.training.dropout.Dropout: nn.Dropout's behaviour with a faster CPU mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recforge.training.dropout import Dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drops_a_share_p_and_scales_the_rest(dtype, p):
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=dtype, requires_grad=True)
    y = Dropout(p)(x)
    assert y.dtype == dtype and y.shape == x.shape
    dropped = (y == 0).float().mean().item()
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped - p) < 6 * sigma
    kept = y[y != 0].float()
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-2)
    # the gradient passes where the value passed, scaled alike, and nowhere else
    g = torch.randn(x.shape, dtype=dtype)
    (x_grad,) = torch.autograd.grad(y, x, g)
    assert torch.equal(x_grad == 0, (y == 0) | (g == 0))
    assert torch.allclose(x_grad[y != 0].float(), (g[y != 0] / (1 - p)).float(), rtol=1e-2)


def test_matches_nn_dropout_outside_training_and_at_the_edges():
    x = torch.randn(4, 5)
    d = Dropout(0.3)
    assert d.state_dict() == {} and isinstance(d, nn.Dropout)
    d.eval()
    assert torch.equal(d(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    with pytest.raises(ValueError):
        Dropout(1.5)
    # the mask comes from torch's global generator: seeded runs repeat
    torch.manual_seed(3)
    a = Dropout(0.4)(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.4)(x), a)
