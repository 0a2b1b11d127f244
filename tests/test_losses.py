"""next_item_loss: objectives, losses, and the causal check."""

from __future__ import annotations

import math

import pytest
import torch

from bench_fakes import registered
from elastic_bench.losses import next_item_loss
from elastic_bench.recommender import ModelConfig, SeqRecModel


def _model(name: str, causal: bool | None = None):
    torch.manual_seed(0)
    return SeqRecModel(ModelConfig.make(name, n_items=20, max_len=8, d_model=16, heads=2, layers=1, dropout=0.0, causal=causal))


def test_objectives_and_losses():
    with registered():
        m = _model("fake-exact")
        items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]])
        t_all = torch.tensor([[0, 0, 4, 5, 6, 7, 8, 9], [2, 3, 4, 5, 6, 7, 8, 9]])
        t_last = torch.tensor([9, 9])
        for obj, t in (("all", t_all), ("last", t_last)):
            full = next_item_loss(m, items, t, obj)
            assert full.ndim == 0 and torch.isfinite(full) and 0 < full.item() < 3 * math.log(20)
            full.backward()
            assert m.item_emb.weight.grad is not None
            m.zero_grad()
            sampled = next_item_loss(m, items, t, obj, loss="sampled", negatives=5)
            assert torch.isfinite(sampled)


def test_all_needs_a_causal_model_and_unknown_names_fail():
    with registered():
        m = _model("fake-experts")  # non-causal
        items = torch.ones(1, 8, dtype=torch.long)
        with pytest.raises(ValueError, match="needs a causal model"):
            next_item_loss(m, items, items, "all")
        with pytest.raises(ValueError, match="unknown objective"):
            next_item_loss(m, items, items[:, 0], "every")
        with pytest.raises(ValueError, match="unknown loss"):
            next_item_loss(m, items, items[:, 0], "last", loss="bpr")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_per_position_sampled_softmax_matches_its_eager_reference(dtype, chunk):
    from elastic_bench.losses import PerPositionSampledSoftmax, per_position_sampled_softmax_reference

    g = torch.Generator().manual_seed(chunk)
    p, d, n_items, n = 37, 12, 15, 9  # few items: duplicates and accidental hits are certain
    q = torch.randn(p, d, generator=g, dtype=dtype, requires_grad=True)
    emb = torch.randn(n_items + 1, d, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randint(1, n_items + 1, (p,), generator=g)
    neg = torch.randint(1, n_items + 1, (p, n), generator=g)
    assert (neg == t[:, None]).any()
    ref = per_position_sampled_softmax_reference(q, emb, t, neg, 0.3)
    gq, ge = torch.autograd.grad(ref, (q, emb))
    out = PerPositionSampledSoftmax.apply(q, emb, t, neg, 0.3, chunk)
    fq, fe = torch.autograd.grad(out, (q, emb))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.double(), ref.double(), rtol=tol, atol=tol)
    torch.testing.assert_close(fq, gq, rtol=tol, atol=tol)
    torch.testing.assert_close(fe, ge, rtol=tol, atol=tol)
    assert fe[0].abs().sum() == 0  # padding row never a candidate
