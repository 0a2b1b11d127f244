"""The ``no-mixing`` floor: per-position projections only, in the registry, the model and sweeps."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

import cli
from elastic_bench import registry
from elastic_bench.recommender import ModelConfig, SeqRecModel

F64 = torch.float64


def _mask(lengths: list[int], n: int, side: str) -> torch.Tensor:
    pos = torch.arange(n)[None, :]
    length = torch.tensor(lengths)[:, None]
    return pos >= n - length if side == "left" else pos < length


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_forward_and_gradients_equal_the_per_position_reference(causal, side):
    torch.manual_seed(0)
    module = registry.build("no-mixing", 24, 3, causal=causal).to(F64)
    mask = _mask([9, 4, 1], 9, side)
    x = torch.randn(3, 9, 24, dtype=F64, requires_grad=True)
    out, ref = module(x, mask), registry.get("no-mixing").reference(module, x, mask)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # padding positions: 0 in both
    w = torch.randn_like(out)
    params = [x, *module.parameters()]
    for g, gr in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)
    assert module.backend_detail == "no-mixing"


def test_mixes_no_tokens_and_reads_no_padding():
    """Changing any other position (padding included) leaves a position's output unchanged."""
    torch.manual_seed(1)
    module = registry.build("no-mixing", 16, 2).to(F64).eval()
    mask = _mask([6, 3], 6, "left")
    x = torch.randn(2, 6, 16, dtype=F64, requires_grad=True)
    base = module(x, mask)
    x2 = x.detach().clone()
    x2[:, 1:] += torch.randn(2, 5, 16, dtype=F64) * 10
    torch.testing.assert_close(module(x2, mask)[:, 0], base[:, 0], rtol=0, atol=0)
    (gx,) = torch.autograd.grad((base * torch.randn_like(base)).sum(), [x])
    assert gx[~mask].abs().max().item() == 0.0


def test_no_query_key_projections_and_no_token_mixing_flops():
    module = registry.build("no-mixing", 16, 2)
    assert sorted(n for n, _ in module.named_parameters()) == ["out_proj.bias", "out_proj.weight", "v_proj.bias", "v_proj.weight"]
    cls = registry.get("no-mixing")
    assert cls.capabilities.causal and cls.capabilities.non_causal
    assert cls.attention_flops(batch=4, seq_len=128, d_model=64, heads=2, causal=True) == 0
    assert cls.counter_blind(module.backend_detail) == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_dtype_runs_in_the_recommender(dtype):
    torch.manual_seed(2)
    model = SeqRecModel(ModelConfig.make("no-mixing", 50, 12, d_model=16, heads=2, layers=2)).to(dtype).eval()
    items = torch.randint(1, 51, (3, 12))
    items[0, :5] = 0  # left padding
    with torch.inference_mode():
        h = model.user_repr(items)
    assert h.dtype == dtype and torch.isfinite(h).all()


def test_sweep_accepts_the_floor(tmp_path):
    out = tmp_path / "floor.csv"
    args = ["sweep", "--models", "no-mixing,sdpa", "--seq-len", "16", "--batch", "2", "--pass", "infer", "--causal", "yes",
            "--repeats", "3", "--min-time", "0", "--process-repeats", "1", "--no-plot", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in csv.DictReader(out.open())}
    assert rows["no-mixing"]["status"] == "ok" and rows["no-mixing"]["backend_detail"] == "no-mixing"
