"""No host sync inside a timed call: "padded or not" (and the packing) is decided before it.

A host sync is any read of a tensor's values by Python: ``Tensor.all/item/tolist/nonzero``
and ``bool()/int()`` of a tensor.  On CUDA each one waits for the GPU; on the CPU we count
them (monkeypatched).  ``flash_attn`` and ``xformers`` are replaced by small fakes that compute
the same attention in PyTorch, so their glue code (packing, scatter, biases) runs on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import types

import pytest
import torch
from rich.console import Console

from elastic_bench.attention import prepare_masks
from elastic_bench.measure import engine as engine_mod
from elastic_bench.runs import sweep as sweep_mod
from elastic_bench.runs.grid import expand
from elastic_bench.measure.passes import build_workload
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import ResultsStore
from elastic_bench.measure.workload_mask import workload_mask

SYNC_METHODS = ("all", "any", "item", "tolist", "nonzero", "__bool__", "__int__", "__index__", "__float__")


class SyncCounter:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False

    @contextlib.contextmanager
    def paused(self):
        on, self.on = self.on, False
        try:
            yield
        finally:
            self.on = on

    @contextlib.contextmanager
    def counting(self):
        self.calls.clear()
        self.on = True
        try:
            yield self.calls
        finally:
            self.on = False


@pytest.fixture
def syncs(monkeypatch):
    counter = SyncCounter()
    for name in SYNC_METHODS:
        orig = getattr(torch.Tensor, name)

        def patched(self, *a, _orig=orig, _name=name, **k):
            if counter.on:
                counter.calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, patched)
    return counter


def dense(q, k, v, causal):
    """[B, N, H, d] softmax attention (the fakes' arithmetic)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = s.shape[-1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, -1) @ v).transpose(1, 2)


@pytest.fixture
def fake_flash_attn(monkeypatch, syncs):
    mod = types.ModuleType("flash_attn")

    def flash_attn_func(q, k, v, dropout_p=0.0, causal=False):
        with syncs.paused():
            return dense(q, k, v, causal)

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, causal=False):
        with syncs.paused():
            cu = cu_q.tolist()
            assert max_q >= max(b - a for a, b in zip(cu, cu[1:]))
            out = torch.empty_like(q)
            for a, b in zip(cu, cu[1:]):
                if b > a:
                    out[a:b] = dense(q[None, a:b], k[None, a:b], v[None, a:b], causal)[0]
            return out

    mod.flash_attn_func, mod.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    monkeypatch.setitem(sys.modules, "flash_attn", mod)
    return mod


@pytest.fixture
def fake_xformers(monkeypatch, syncs):
    xf, ops, fmha, bias_mod = (types.ModuleType(n) for n in ("xformers", "xformers.ops", "xformers.ops.fmha", "xformers.ops.fmha.attn_bias"))

    class LowerTriangularMask:
        pass

    class BlockDiagonalMask:
        causal = False

        def __init__(self, lens):
            self.lens = list(lens)

        @classmethod
        def from_seqlens(cls, lens):
            return cls(lens)

    class BlockDiagonalCausalMask(BlockDiagonalMask):
        causal = True

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0):
        with syncs.paused():
            if attn_bias is None or isinstance(attn_bias, LowerTriangularMask):
                return dense(q, k, v, isinstance(attn_bias, LowerTriangularMask))
            out, start = torch.empty_like(q), 0
            for n in attn_bias.lens:
                out[:, start : start + n] = dense(q[:, start : start + n], k[:, start : start + n], v[:, start : start + n], attn_bias.causal)
                start += n
            return out

    bias_mod.LowerTriangularMask, bias_mod.BlockDiagonalMask, bias_mod.BlockDiagonalCausalMask = LowerTriangularMask, BlockDiagonalMask, BlockDiagonalCausalMask
    fmha.attn_bias = bias_mod
    ops.fmha, ops.memory_efficient_attention = fmha, memory_efficient_attention
    xf.ops = ops
    for name, m in (("xformers", xf), ("xformers.ops", ops), ("xformers.ops.fmha", fmha), ("xformers.ops.fmha.attn_bias", bias_mod)):
        monkeypatch.setitem(sys.modules, name, m)
    return xf


def build(name, causal):
    from baselines.flash_attn import FlashAttnBackend
    from baselines.sdpa import SDPABackend, SDPAMathBackend
    from baselines.xformers import XFormersBackend

    cls = {"sdpa": SDPABackend, "sdpa-math": SDPAMathBackend, "flash-attn": FlashAttnBackend, "xformers": XFormersBackend}[name]
    torch.manual_seed(0)
    return cls.build(32, 2, causal=causal).double().eval()


def inputs(padded):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 32, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 40, dtype=torch.bool)
    if padded:
        mask[0, :7] = False
        mask[2, :39] = False
    return x, mask


@pytest.mark.parametrize("name", ["sdpa", "sdpa-math", "flash-attn", "xformers"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_prepared_call_does_not_sync_and_is_right(name, padded, causal, syncs, fake_flash_attn, fake_xformers):
    module = build(name, causal)
    x, mask = inputs(padded)
    with torch.no_grad():
        with syncs.counting() as calls:
            y_unprepared = module(x, mask)
        assert calls, "the counter sees the per-call decision of an unprepared module"
        module.prepare(mask)
        with syncs.counting() as calls:
            y = module(x, mask)
        assert calls == [], f"host syncs inside the prepared call: {calls}"
        ref = module.reference(x, mask)
    real = mask[..., None]
    torch.testing.assert_close(y * real, ref * real)
    torch.testing.assert_close(y_unprepared * real, y * real)


def test_a_plan_is_reused_only_for_the_same_shape(syncs):
    module = build("sdpa", causal=True)
    x, mask = inputs(padded=True)
    module.prepare(mask)
    with torch.no_grad(), syncs.counting() as calls:
        module(x[:2], mask[:2])  # another batch: decided again (one sync), not taken from the plan
    assert calls.count("all") == 1
    module.prepare(None)
    with torch.no_grad(), syncs.counting() as calls:
        module(x, mask)
    assert calls.count("all") == 1


def test_prepare_masks_reaches_every_block_of_a_model():
    cell = _cells("sdpa", "model", "random")[0]
    work = build_workload(cell, torch.device("cpu"))
    mask = workload_mask(work)
    assert torch.equal(mask, work.inputs[0] != 0) and not bool(mask.all())
    assert prepare_masks(work.module, mask) == cell.layers == 2
    op = build_workload(_cells("sdpa", "op", "random")[0], torch.device("cpu"))
    assert workload_mask(op) is op.inputs[3]


def _cells(model, level, padding):
    spec = load_spec(dict(device="cpu", d_model=16, heads=2, layers=2, n_items=50, seq_len="32", batch="2", models=model,
                          level=level, padding=padding, causal="yes", out="unused.csv", plot=False, process_repeats=1))
    return expand(spec)


@pytest.mark.parametrize("level", ["model", "op"])
def test_the_engine_times_prepared_calls(level, tmp_path, syncs, monkeypatch):
    """The sweep prepares the masks before timing: no ``mask.all()`` in any timed call."""
    seen: list[list[str]] = []
    real_time_pass = engine_mod.time_pass

    def counted_time_pass(fn, device, **kw):
        with syncs.counting() as calls:
            t = real_time_pass(fn, device, **kw)
        seen.append(list(calls))
        return t

    monkeypatch.setattr(engine_mod, "time_pass", counted_time_pass)
    spec = load_spec(dict(device="cpu", d_model=16, heads=2, layers=2, n_items=50, seq_len="32", batch="2", models="sdpa",
                          level=level, padding="random", causal="yes", out=str(tmp_path / "r.csv"), plot=False,
                          repeats=3, min_time=0, warmup=0, process_repeats=1))
    sweep_mod.run_sweep(spec, Console(file=io.StringIO(), width=120), progress=False)
    (row,) = ResultsStore(spec.out).rows()
    assert row["status"] == "ok" and seen == [[]], (row["reason"], seen)
