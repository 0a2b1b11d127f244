"""The chunk-parallel causal scan against the sequential scan and the naive reference.

``causal_lda_scan`` (every chunk at once) must be the same function as
``causal_lda_scan_sequential`` (one chunk after another, the previous implementation) and
as the naive per-position reference of the layer (:func:`naive.lda_reference`): forward and
every gradient in float64, on fresh random inputs with left/right padding, all-padding
rows, odd lengths, shared and per-sequence dispatchers, several groups, and the exact
per-position path of chunks whose running max jumps.
"""

from __future__ import annotations

import pytest
import torch

from elastic_bench.elastic import causal
from elastic_bench.elastic.causal import causal_lda_scan, causal_lda_scan_sequential
from elastic_bench.elastic.lda import LDALayer
from elastic_bench.elastic.naive import lda_reference

F64 = torch.float64


def scan_inputs(gen, b, h, n, dh, k, shared=True, side="left", dtype=F64, q1_scale=1.0):
    """Random scan inputs (leaves with gradients) and a padding mask; the last row is all padding when b > 2."""

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype).requires_grad_(True)

    kb = 1 if shared else b
    q1 = leaf(kb, h, k, dh, scale=q1_scale)
    k1, v1, q2 = leaf(b, h, n, dh), leaf(b, h, n, dh), leaf(b, h, n, dh)
    ck, cv = leaf(kb, h, k, dh), leaf(kb, h, k, dh)
    gk, gv = leaf(h, h, dh, dh, scale=0.3), leaf(h, h, dh, dh, scale=0.3)
    lengths = torch.randint(1, n + 1, (b,), generator=gen)
    pos = torch.arange(n)[None, :]
    mask = pos >= (n - lengths)[:, None] if side == "left" else pos < lengths[:, None]
    if b > 2:
        mask[-1] = False
    return [q1, k1, v1, mask, q2, ck, cv, gk, gv]


def fwd_bwd(fn, args, weight):
    out = fn(*args)
    leaves = [t for t in args if t.requires_grad]
    return out, torch.autograd.grad((out * weight).sum(), leaves)


def assert_same(a, b, what, rtol=1e-9, atol=1e-10):
    (out_a, g_a), (out_b, g_b) = a, b
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol, msg=lambda m: f"{what} forward: {m}")
    for i, (x, y) in enumerate(zip(g_a, g_b)):
        assert torch.isfinite(x).all(), f"{what}: gradient {i} not finite"
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m: f"{what} gradient {i}: {m}")


@pytest.mark.parametrize("shape", [(3, 2, 37, 8, 5), (2, 1, 9, 4, 3), (4, 3, 64, 4, 6), (1, 2, 1, 8, 4)])
@pytest.mark.parametrize("chunk", [1, 3, 8, 32])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("shared", [True, False])
def test_parallel_scan_equals_sequential_scan(shape, chunk, side, shared):
    """Every output position (padding included) and every gradient, float64."""
    gen = torch.Generator().manual_seed(hash((shape, chunk, side, shared)) % 2**31)
    args = scan_inputs(gen, *shape, shared=shared, side=side)
    w = torch.randn(shape[0], shape[1], shape[2], shape[3], generator=gen, dtype=F64)
    seq = fwd_bwd(lambda *a: causal_lda_scan_sequential(*a, chunk_size=7), args, w)
    assert_same(fwd_bwd(lambda *a: causal_lda_scan(*a, chunk_size=chunk), args, w), seq, "parallel vs sequential")


@pytest.mark.parametrize("budget", [1, 3000, 1 << 30])
def test_groups_and_tail_chunk_do_not_change_the_result(budget):
    """A tiny budget splits the chunks into many groups (state carried between them) and the
    last N mod c positions form their own chunk; the result is the same in every case."""
    gen = torch.Generator().manual_seed(budget % 997)
    args = scan_inputs(gen, 3, 2, 45, 8, 5)
    w = torch.randn(3, 2, 45, 8, generator=gen, dtype=F64)
    seq = fwd_bwd(lambda *a: causal_lda_scan_sequential(*a, chunk_size=5), args, w)
    assert_same(fwd_bwd(lambda *a: causal_lda_scan(*a, chunk_size=8, budget=budget), args, w), seq, f"budget={budget}")


def test_chunks_run_together_not_in_a_python_loop(monkeypatch):
    """One group (one call of the chunk-parallel step) covers every chunk of a usual shape."""
    calls = []
    inner = causal._group
    monkeypatch.setattr(causal, "_group", lambda *a: calls.append(a[1].shape[2]) or inner(*a))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        causal_lda_scan(*scan_inputs(gen, 2, 2, 256, 16, 8), chunk_size=8)
    assert calls == [256]


def test_inference_groups_respect_the_budget(monkeypatch):
    """Without autograd no group's working set exceeds the budget (so memory is never O(N·k·d)
    at once beyond it), whatever N."""
    sizes = []
    inner = causal._group
    monkeypatch.setattr(causal, "_group", lambda *a: sizes.append(a[1].shape[2]) or inner(*a))
    b, h, n, dh, k, c, budget = 1, 2, 4096, 8, 8, 16, 1 << 17
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        causal_lda_scan(*scan_inputs(gen, b, h, n, dh, k), chunk_size=c, budget=budget)
    per_chunk = b * h * (h * c * (2 * c + 3 * k) + 6 * c * k + 3 * k * dh)
    assert len(sizes) > 1 and sum(sizes) == n
    assert max(sizes) // c * per_chunk <= budget


@pytest.mark.parametrize("side", ["left", "right"])
def test_exact_path_of_jumping_chunks_equals_sequential(monkeypatch, side):
    """With the threshold below 0 every chunk takes the per-position path (the weights
    W_tsj = e^{S_sj - m_tj}); it is the same function."""
    monkeypatch.setattr(causal, "THRESHOLD", -1.0)
    gen = torch.Generator().manual_seed(2)
    args = scan_inputs(gen, 3, 2, 29, 4, 5, shared=False, side=side)
    w = torch.randn(3, 2, 29, 4, generator=gen, dtype=F64)
    seq = fwd_bwd(lambda *a: causal_lda_scan_sequential(*a, chunk_size=4), args, w)
    assert_same(fwd_bwd(lambda *a: causal_lda_scan(*a, chunk_size=8), args, w), seq, "exact path")


def test_score_jumps_of_160_in_fp32_are_finite_and_exact(monkeypatch):
    """Scores spread over ±80 inside chunks: the jumping chunks are found and redone exactly;
    fp32 forward and gradients finite and equal to the float64 sequential scan."""
    found = []
    inner = causal._exact_chunks
    monkeypatch.setattr(causal, "_exact_chunks", lambda *a: found.append(a[0].shape[0]) or inner(*a))
    gen = torch.Generator().manual_seed(3)
    args = scan_inputs(gen, 2, 2, 40, 4, 3, q1_scale=40.0)
    with torch.no_grad():
        args[1].mul_(torch.where(torch.rand(2, 2, 40, 1, generator=gen, dtype=F64) < 0.5, -1.0, 1.0))
    f32 = [t.detach().float().requires_grad_(True) if t.is_floating_point() else t for t in args]
    w = torch.randn(2, 2, 40, 4, generator=gen, dtype=F64)
    out, g = fwd_bwd(lambda *a: causal_lda_scan(*a, chunk_size=16), f32, w.float())
    ref, gr = fwd_bwd(lambda *a: causal_lda_scan_sequential(*a, chunk_size=16), args, w)
    assert found, "no chunk took the exact path: the test does not exercise it"
    assert torch.isfinite(out).all() and all(torch.isfinite(x).all() for x in g)
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3)
    for x, y in zip(g, gr):
        torch.testing.assert_close(x.double(), y, rtol=2e-3, atol=2e-3 * y.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_scanned_in_fp32(dtype):
    gen = torch.Generator().manual_seed(4)
    args = scan_inputs(gen, 2, 2, 70, 8, 4)
    half = [t.detach().to(dtype) if t.is_floating_point() else t for t in args]
    with torch.no_grad():
        out = causal_lda_scan(*half)
        ref = causal_lda_scan_sequential(*[t.double() if t.is_floating_point() else t for t in half])
    assert out.dtype == dtype
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 2e-2


@pytest.mark.parametrize("chunk", [1, 5, 32])
@pytest.mark.parametrize("side", ["left", "right"])
def test_layer_with_parallel_scan_equals_naive_reference(chunk, side):
    """Through LDALayer (folded weights, projections) against the per-position naive reference."""
    gen = torch.Generator().manual_seed(hash((chunk, side)) % 2**31)
    b, n, d, h, k = 3, 21, 12, 2, 5
    layer = LDALayer(d, h, 0.0, causal=True, ffn_mult=2, chunk_size=chunk).to(F64).eval()
    for prm in layer.parameters():
        prm.data.normal_(0, 0.5, generator=gen)
    x = torch.randn(b, n, d, dtype=F64, generator=gen, requires_grad=True)
    pos = torch.arange(n)[None, :]
    lengths = torch.tensor([n, 7, 0])
    mask = pos >= (n - lengths)[:, None] if side == "left" else pos < lengths[:, None]
    p = torch.randn(1, k, d, dtype=F64, generator=gen, requires_grad=True)
    out, _ = layer(x, mask, p)
    ref, _ = lda_reference(layer, x, mask, p)
    real = mask[..., None]
    torch.testing.assert_close(out * real, ref * real, rtol=1e-9, atol=1e-10)
    w = torch.randn(out.shape, dtype=F64, generator=gen) * real
    inputs = [x, p, *layer.parameters()]
    for gf, gr in zip(torch.autograd.grad((out * w).sum(), inputs, allow_unused=True), torch.autograd.grad((ref * w).sum(), inputs, allow_unused=True)):
        if gr is not None:
            torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)


def test_dropout_recomputed_identically_in_backward():
    """Under autograd the groups are recomputed in backward with the same dropout masks: the
    gradient of a linear function of v1 equals the forward's own coefficient."""
    gen = torch.Generator().manual_seed(5)
    args = scan_inputs(gen, 2, 2, 24, 4, 3)
    torch.manual_seed(0)
    out = causal_lda_scan(*args, chunk_size=8, dropout_p=0.5)
    torch.manual_seed(0)
    with torch.no_grad():
        again = causal_lda_scan(*args, chunk_size=8, dropout_p=0.5)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    # the output is linear in cv: d(out·w)/d cv computed by autograd must reproduce out's cv part
    w = torch.randn(out.shape, generator=gen, dtype=F64)
    (gcv,) = torch.autograd.grad((out * w).sum(), [args[6]])
    torch.manual_seed(0)
    with torch.no_grad():
        zero_cv = causal_lda_scan(*args[:6], torch.zeros_like(args[6]), *args[7:], chunk_size=8, dropout_p=0.5)
    torch.testing.assert_close(((out - zero_cv) * w).sum(), (gcv * args[6]).sum(), rtol=1e-10, atol=1e-10)
