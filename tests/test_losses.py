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
