"""recforge.training.embedding.Embedding: nn.Embedding with a fast CPU backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recforge.training.embedding import Embedding


@pytest.mark.parametrize("shape", [(50,), (16, 3), (4, 5, 2)])
def test_same_values_and_gradients_as_nn_embedding(shape):
    gen = torch.Generator().manual_seed(0)
    ours, ref = Embedding(30, 6), nn.Embedding(30, 6)
    ref.load_state_dict(ours.state_dict())
    idx = torch.randint(0, 30, shape, generator=gen)  # repeated rows accumulate
    upstream = torch.randn(*shape, 6, generator=gen)
    a, b = ours(idx), ref(idx)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (a * upstream).sum().backward()
    (b * upstream).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    assert ours.weight.grad.shape == (30, 6)


def test_int32_indices_and_accumulation_over_calls():
    emb = Embedding(10, 2)
    idx = torch.tensor([1, 1, 3], dtype=torch.int32)
    (emb(idx).sum() + emb(idx.long()[:1]).sum()).backward()
    expected = torch.zeros(10, 2)
    expected[1] = 3.0
    expected[3] = 1.0
    torch.testing.assert_close(emb.weight.grad, expected)


def test_out_of_range_index_is_an_error():
    emb = Embedding(5, 2)
    with pytest.raises(IndexError):
        emb(torch.tensor([5]))
    with pytest.raises((IndexError, RuntimeError)):
        emb(torch.tensor([-1]))
    with pytest.raises((IndexError, RuntimeError)):
        emb(torch.tensor([1.0]))


def test_falls_back_to_nn_embedding_outside_the_fast_path():
    emb = Embedding(5, 2, padding_idx=0)
    out = emb(torch.tensor([0, 1]))
    out.sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0  # the padding row gets no gradient
    with torch.no_grad():  # no gradient wanted: plain nn.Embedding
        assert Embedding(5, 2)(torch.tensor([2])).shape == (1, 2)


def test_lookup_of_a_computed_table_passes_gradients_through():
    from recforge.training.embedding import lookup

    gen = torch.Generator().manual_seed(1)
    base = torch.randn(12, 3, generator=gen, requires_grad=True)
    idx = torch.randint(0, 12, (7, 2), generator=gen)
    upstream = torch.randn(7, 2, 3, generator=gen)
    (lookup(base * 2.0, idx) * upstream).sum().backward()
    ours = base.grad.clone()
    base.grad = None
    (nn.functional.embedding(idx, base * 2.0) * upstream).sum().backward()
    torch.testing.assert_close(ours, base.grad)
    with torch.no_grad():
        assert torch.equal(lookup(base, idx), base[idx])
