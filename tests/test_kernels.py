"""ELASTIC's Triton kernels against their PyTorch references (issue #6).

Without a GPU the kernels run in Triton's CPU interpreter.  ``TRITON_INTERPRET=1`` must be
set before triton itself is imported (triton's own ``tl`` helpers are ``@jit`` functions,
fixed at import), so this module sets it when it is collected, for the rest of the pytest
process (nothing else in the suite imports triton; the kernels run on CPU tensors only when
``ELASTIC_BENCH_KERNELS=triton`` forces them).  If triton was already imported without it,
every interpreter test here skips and ``test_interpreter_tests_in_subprocess`` runs this
file in a fresh interpreter instead.  The interpreter runs fp32 and fp16 (its bf16 is
broken) on tiny shapes.  ``TestCuda`` runs the same comparisons compiled, in bf16/fp16/fp32
at realistic shapes, where a GPU exists.

References are the PyTorch paths in float64 on the same (rounded) inputs.  The causal
tests weight every position's output, those before a row's first real token included
(both scans' gradients are finite there: ``test_elastic.py`` checks the PyTorch one).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
LATE = False  # triton imported before the interpreter could be switched on
if not HAS_CUDA:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        LATE = True
    else:
        os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton", reason="triton is not installed (optional dev dependency, Linux only)")

from elastic_bench.elastic import kernels  # noqa: E402
from elastic_bench.elastic.causal import causal_lda_scan as torch_scan  # noqa: E402
from elastic_bench.elastic.imr import ProductKeyMemory  # noqa: E402
from elastic_bench.elastic.lda import LDALayer, pack, unpack  # noqa: E402

F64 = torch.float64
TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 3e-2}


@pytest.fixture(scope="module")
def interp():
    """The kernel modules, defined under Triton's CPU interpreter."""
    if HAS_CUDA:
        pytest.skip("a CUDA GPU is present: TestCuda runs the compiled kernels instead of the interpreter")
    if LATE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: test_interpreter_tests_in_subprocess runs these")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(kernels.ENV_VAR, raising=False)
        yield {name: kernels.load(name) for name in ("pack", "unpack", "causal_scan", "product_keys")}


def test_interpreter_tests_in_subprocess():
    if not LATE:
        pytest.skip("the interpreter tests ran in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(kernels.ENV_VAR, None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]


def close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """max |got - ref| ≤ tol · max |ref| (+ a floor for near-zero references)."""
    err = (got.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    assert err <= TOL[dtype] * max(scale, 1e-3), f"{what}: max error {err:.3g} vs scale {scale:.3g} ({dtype})"


def padding_mask(b: int, n: int, side: str, gen: torch.Generator) -> torch.Tensor:
    """Random lengths padded on ``side``; the last row is all padding."""
    lengths = torch.randint(1, n + 1, (b,), generator=gen)
    ar = torch.arange(n)
    mask = ar[None, :] >= (n - lengths)[:, None] if side == "left" else ar[None, :] < lengths[:, None]
    mask[-1] = False
    return mask


def rand(gen, *shape, dtype=torch.float32, scale=1.0, device="cpu"):
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype).requires_grad_()


def fwd_bwd(fn, inputs, weight):
    out = fn(*inputs)
    grads = torch.autograd.grad((out.double() * weight).sum(), [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad])
    return out, grads


def as_f64(ts):
    return [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in ts]


# ---------------------------------------------------------------- pack / unpack


def check_pack(mod, dtype, b, h, n, dh, k, side, shared_q, block_n, split_tiles, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q = rand(gen, 1 if shared_q else b, h, k, dh, dtype=dtype, device=device)
    kk = rand(gen, b, n, h, dh, dtype=dtype, device=device).transpose(1, 2)  # head-split views, as the layer makes them
    v = rand(gen, b, n, h, dh, dtype=dtype, device=device).transpose(1, 2)
    mask = padding_mask(b, n, side, gen).to(device)
    w = torch.randn(b, h, k, dh, generator=gen, dtype=F64).to(device)
    out, g = fwd_bwd(lambda *a: mod.pack_attention(*a, block_n=block_n, split_tiles=split_tiles), [q, kk, v, mask], w)
    ref, gr = fwd_bwd(pack, as_f64([q, kk, v, mask]), w)
    close(out, ref, dtype, "pack out")
    assert out[-1].abs().max().item() == 0.0, "all-pad row must give zero dispatchers"
    for name, a, r in zip(("dq", "dk", "dv"), g, gr):
        close(a, r, dtype, f"pack {name}")
    pad = ~mask[:, None, :, None].expand_as(g[1])
    assert g[1][pad].abs().max().item() == 0.0 and g[2][pad].abs().max().item() == 0.0, "gradient into padding keys/values"


def check_unpack(mod, dtype, b, h, n, dh, k, shared_kv, block_n, split_tiles, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q = rand(gen, b, n, h, dh, dtype=dtype, device=device).transpose(1, 2)
    kk = rand(gen, 1 if shared_kv else b, h, k, dh, dtype=dtype, device=device)
    v = rand(gen, 1 if shared_kv else b, h, k, dh, dtype=dtype, device=device)
    w = torch.randn(b, h, n, dh, generator=gen, dtype=F64).to(device)
    out, g = fwd_bwd(lambda *a: mod.unpack_attention(*a, block_n=block_n, split_tiles=split_tiles), [q, kk, v], w)
    ref, gr = fwd_bwd(unpack, as_f64([q, kk, v]), w)
    close(out, ref, dtype, "unpack out")
    for name, a, r in zip(("dq", "dk", "dv"), g, gr):
        close(a, r, dtype, f"unpack {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("side,shared_q", [("left", True), ("right", False)])
@pytest.mark.parametrize("block_n,split_tiles", [(16, 1), (32, 2)])
def test_pack_kernel(interp, dtype, side, shared_q, block_n, split_tiles):
    check_pack(interp["pack"], dtype, 3, 2, 37, 8, 5, side, shared_q, block_n, split_tiles, seed=block_n + split_tiles)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shared_kv", [True, False])
@pytest.mark.parametrize("block_n,split_tiles", [(16, 1), (32, 2)])
def test_unpack_kernel(interp, dtype, shared_kv, block_n, split_tiles):
    check_unpack(interp["unpack"], dtype, 2, 2, 37, 8, 5, shared_kv, block_n, split_tiles, seed=block_n)


# ---------------------------------------------------------------- causal scan


def scan_inputs(gen, dtype, b, h, n, dh, k, shared, device="cpu", q1_scale=1.0):
    s = dh**-0.5
    q1 = rand(gen, 1 if shared else b, h, k, dh, dtype=dtype, scale=s * q1_scale, device=device)
    k1 = rand(gen, b, n, h, dh, dtype=dtype, device=device).transpose(1, 2)
    v1 = rand(gen, b, n, h, dh, dtype=dtype, device=device).transpose(1, 2)
    q2 = rand(gen, b, n, h, dh, dtype=dtype, scale=s, device=device).transpose(1, 2)
    ck = rand(gen, 1 if shared else b, h, k, dh, dtype=dtype, device=device)
    cv = rand(gen, 1 if shared else b, h, k, dh, dtype=dtype, device=device)
    gk = rand(gen, h, h, dh, dh, dtype=dtype, scale=s, device=device)
    gv = rand(gen, h, h, dh, dh, dtype=dtype, scale=s, device=device)
    return [q1, k1, v1, q2, ck, cv, gk, gv]


def check_scan(mod, dtype, b, h, n, dh, k, side, shared, chunk, seg_chunks, seed, device="cpu", q1_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    q1, k1, v1, q2, ck, cv, gk, gv = scan_inputs(gen, dtype, b, h, n, dh, k, shared, device, q1_scale)
    mask = padding_mask(b, n, side, gen).to(device)
    w = torch.randn(b, h, n, dh, generator=gen, dtype=F64).to(device)  # every position, padding included
    inputs = [q1, k1, v1, mask, q2, ck, cv, gk, gv]
    out, g = fwd_bwd(lambda *a: mod.causal_lda_scan(*a, chunk_size=chunk, seg_chunks=seg_chunks), inputs, w)
    ref, gr = fwd_bwd(lambda *a: torch_scan(*a, chunk_size=7), as_f64(inputs), w)
    assert torch.isfinite(out).all()
    close(out, ref, dtype, "scan out (all positions)")
    for name, a, r in zip(("q1", "k1", "v1", "q2", "ck", "cv", "gk", "gv"), g, gr):
        assert torch.isfinite(a).all(), f"scan d{name} not finite"
        close(a, r, dtype, f"scan d{name}")


@pytest.mark.parametrize(
    "dtype,side,shared,chunk,seg_chunks",
    [
        (torch.float32, "left", True, 16, None),  # several segments: prefix-state kernels
        (torch.float32, "right", False, 16, 1),
        (torch.float32, "right", True, 32, 2),
        (torch.float16, "left", True, 16, 2),
    ],
)
def test_causal_scan_kernel(interp, dtype, side, shared, chunk, seg_chunks):
    check_scan(interp["causal_scan"], dtype, 3, 2, 37, 8, 5, side, shared, chunk, seg_chunks, seed=chunk)


def test_causal_scan_position_by_position_fallback(interp, monkeypatch):
    """A negative threshold flags every chunk: the exact per-position path computes all of it."""
    monkeypatch.setattr(interp["causal_scan"], "THRESHOLD", -1.0)
    check_scan(interp["causal_scan"], torch.float32, 2, 2, 19, 8, 3, "left", True, 16, None, seed=5)


def test_causal_scan_kernel_extreme_scores(interp):
    """Scores spread over [-80, 80] inside one chunk (the range exp overflows): finite, exact."""
    mod = interp["causal_scan"]
    b, h, n, dh, k = 1, 1, 9, 1, 2
    q1 = torch.ones(b, h, k, dh, requires_grad=True)
    k1 = (torch.linspace(-80, 80, n) * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1, 1])).view(1, 1, n, 1).requires_grad_()
    gen = torch.Generator().manual_seed(3)
    v1, q2 = rand(gen, b, h, n, dh), rand(gen, b, h, n, dh)
    ck, cv = rand(gen, 1, h, k, dh), rand(gen, 1, h, k, dh)
    gk, gv = rand(gen, h, h, dh, dh), rand(gen, h, h, dh, dh)
    mask = torch.ones(b, n, dtype=torch.bool)
    inputs = [q1, k1, v1, mask, q2, ck, cv, gk, gv]
    w = torch.randn(b, h, n, dh, generator=gen, dtype=F64)
    out, g = fwd_bwd(lambda *a: mod.causal_lda_scan(*a, chunk_size=16), inputs, w)
    ref, gr = fwd_bwd(lambda *a: torch_scan(*a, chunk_size=4), as_f64(inputs), w)
    assert torch.isfinite(out).all() and all(torch.isfinite(t).all() for t in g)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    for a, r in zip(g, gr):
        torch.testing.assert_close(a.double(), r, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- product keys


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_product_key_kernel(interp, dtype):
    mod = interp["product_keys"]
    gen = torch.Generator().manual_seed(0)
    for m, experts, d, topk in [(1024, 8, 16, None), (16, 4, 8, None), (256, 6, 12, 5)]:
        imr = ProductKeyMemory(d, experts, m, topk=topk)
        q = torch.randn(5, d, generator=gen)
        q16, k1, k2 = (t.detach().to(dtype).requires_grad_() for t in (q, imr.keys1, imr.keys2))
        scores, idx = mod.product_key_retrieve(q16, k1, k2, imr.topk, experts)
        with torch.no_grad():  # the PyTorch path on the same rounded values, in float64
            imr64 = imr.double()
            imr64.keys1.copy_(k1.double())
            imr64.keys2.copy_(k2.double())
        q64 = q16.detach().double().requires_grad_()
        ref_scores, ref_idx = imr64.retrieve(q64)
        if dtype == torch.float32:
            assert torch.equal(idx, ref_idx), (m, experts)
        else:  # fp32 kernel scores vs float64: near-ties may order differently, the chosen scores may not
            close(scores.sort(-1, descending=True).values, ref_scores, torch.float16, "pk scores")
        w = torch.randn(scores.shape, generator=gen, dtype=F64)
        g = torch.autograd.grad((scores.double() * w).sum(), [q16, k1, k2])
        if dtype == torch.float32:
            gr = torch.autograd.grad((ref_scores * w).sum(), [q64, imr64.keys1, imr64.keys2])
            for a, r in zip(g, gr):
                close(a, r, dtype, "pk grad")
        assert all(torch.isfinite(t).all() for t in g)


# ---------------------------------------------------------------- the layer and the dispatch


@pytest.mark.parametrize("causal", [False, True])
def test_layer_triton_equals_torch(interp, monkeypatch, causal):
    """LDALayer with ELASTIC_BENCH_KERNELS=triton equals the PyTorch path; backend_detail says which ran."""
    gen = torch.Generator().manual_seed(11)
    layer = LDALayer(16, 2, 0.0, causal, ffn_mult=2, chunk_size=16).eval()
    b, n, k = 3, 21, 4
    x = torch.randn(b, n, 16, generator=gen, requires_grad=True)
    mask = padding_mask(b, n, "left", gen)
    p = torch.randn(1 if causal else b, k, 16, generator=gen, requires_grad=True)
    w = torch.randn(b, n, 16, generator=gen) * mask.cummax(1).values[..., None]
    results = {}
    for mode in ("torch", "triton"):
        monkeypatch.setenv(kernels.ENV_VAR, mode)
        out, p_next = layer(x, mask, p)
        grads = torch.autograd.grad((out * w).sum() + p_next.sum(), [x, p, *layer.parameters()], allow_unused=True)
        results[mode] = (out, grads, layer.backend_detail)
    assert results["torch"][2] == ("torch:chunked-scan(c=16)" if causal else "torch:sdpa")
    assert results["triton"][2] == ("triton:causal-scan(c=16)" if causal else "triton:pack+unpack")
    torch.testing.assert_close(results["triton"][0], results["torch"][0], rtol=1e-4, atol=1e-5)
    for a, r in zip(results["triton"][1], results["torch"][1]):
        assert (a is None) == (r is None)
        if a is not None:
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_imr_dispatch_label(interp, monkeypatch):
    imr = ProductKeyMemory(16, 4, 256)
    e, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    got = imr(e, mask)
    assert imr.backend_detail == "triton:product-keys"
    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    torch.testing.assert_close(got, imr(e, mask))
    assert imr.backend_detail == "torch:topk"


def test_dispatch_rules(monkeypatch):
    x = torch.randn(2, 2, 8, 16)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.kernel_mode() == "auto"
    d = kernels.decide("pack+unpack", [x], 16, 4)
    assert not d.use_triton and d.reason == "auto: tensors on cpu"
    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    assert kernels.decide("pack+unpack", [x], 16, 4).reason == f"{kernels.ENV_VAR}=torch"
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="accepted: auto, torch, triton"):
        kernels.kernel_mode()
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.decide("pack+unpack", [x], 16, 4)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # decide() only; no kernel is defined or run here
    assert kernels.decide("pack+unpack", [x], 16, 4).use_triton
    assert "dropout" in kernels.decide("pack+unpack", [x], 16, 4, dropout_p=0.1).reason
    assert "float64" in kernels.decide("pack+unpack", [x.double()], 16, 4).reason
    assert "bfloat16" in kernels.decide("pack+unpack", [x.bfloat16()], 16, 4).reason
    assert "head_dim=128 > 64" in kernels.decide("causal-scan", [x], 128, 4).reason
    assert not kernels.decide("pack+unpack", [x], 256, 4).use_triton


def test_layer_falls_back_with_reason(interp, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    layer = LDALayer(16, 2, dropout=0.1, causal=False).train()
    layer(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 4, 16))
    assert layer.backend_detail == "torch:sdpa" and "dropout" in layer.kernel_reason


def test_import_without_triton():
    """Importing elastic_bench imports no triton; without triton the PyTorch path runs, with the reason."""
    code = textwrap.dedent(
        """
        import sys, torch
        import elastic_bench, elastic_bench.recommender, elastic_bench.elastic.backend
        from elastic_bench.elastic.lda import LDALayer
        assert 'triton' not in sys.modules, 'importing elastic_bench imported triton'
        sys.modules['triton'] = None  # as if not installed
        from elastic_bench.elastic import kernels
        ok, why = kernels.triton_status()
        assert not ok and 'triton unavailable' in why, why
        import os
        os.environ['ELASTIC_BENCH_KERNELS'] = 'triton'
        layer = LDALayer(16, 2)
        try:
            layer(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 4, 16))
        except RuntimeError as e:
            assert 'triton unavailable' in str(e), e
        else:
            raise AssertionError('forced triton without triton must fail')
        print('OK')
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", kernels.ENV_VAR)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


# ---------------------------------------------------------------- causal scan: offsets, autocast, barriers, operands, limits


def meta_heads(b, n, h, dh, fused=1):
    """A [B, h, N, d_h] head-split view with no storage (meta): of [B, N, h, d_h], or of a fused
    [B, N, fused, h, d_h] projection (a wider stride than its own numel needs)."""
    if fused == 1:
        return torch.empty(b, n, h, dh, device="meta").transpose(1, 2)
    return torch.empty(b, n, fused, h, dh, device="meta")[:, :, 0].transpose(1, 2)


def meta_scan_tensors(b, h, n, dh, k, fused=1):
    x = meta_heads(b, n, h, dh, fused)
    small = torch.empty(1, h, k, dh, device="meta")
    g = torch.empty(h, h, dh, dh, device="meta")
    mask = torch.empty(b, n, dtype=torch.bool, device="meta")
    return dict(q1=small, k1=x, v1=x, mask=mask, q2=x, ck=small, cv=small, gk=g, gv=g)


def test_scan_index_guard_counts_the_saved_states(interp):
    """At B=8, h=2, N=1M, k = d_h = 64, C=16 every input is < 2**31 elements (the old guard's
    only check) but the states saved for the backward are 2**32: int32 offsets would wrap."""
    mod = interp["causal_scan"]
    b, h, n, dh, k = 8, 2, 1 << 20, 64, 64
    tensors = meta_scan_tensors(b, h, n, dh, k)
    assert max(t.numel() for t in (tensors["k1"], tensors["v1"], tensors["q2"])) < 2**31
    ext = mod.index_extents(tensors, b, h, n, dh, k, 16, 1, save=True)
    assert ext["saved states"] == b * h * (n // 16) * 64 * 64 == 2**32
    assert max(v for name, v in ext.items() if name != "saved states") < 2**31
    assert mod.needs_int64(ext)
    assert not mod.needs_int64(mod.index_extents(tensors, b, h, n, dh, k, 16, 1, save=False))  # inference: int32 suffices


def test_scan_index_guard_counts_strided_extents(interp):
    """A head view of a fused projection reaches 3× further than its numel: the extent counts."""
    mod = interp["causal_scan"]
    b, h, n, dh, k = 1, 2, 1 << 24, 32, 16
    tensors = meta_scan_tensors(b, h, n, dh, k, fused=3)
    assert tensors["k1"].numel() == 2**30
    ext = mod.index_extents(tensors, b, h, n, dh, k, 32, 1, save=False)
    assert ext["k1"] > 2**31 and mod.needs_int64(ext)


class _LaunchSpy:
    """Stands in for ``_scan_fwd``: records each launch's ``IDX64`` and runs the real kernel."""

    def __init__(self, kernel):
        self.kernel, self.idx64 = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.idx64.append(kw["IDX64"])
            return self.kernel[grid](*args, **kw)

        return launch


def test_scan_launch_picks_int64_when_the_saved_states_need_it(interp, monkeypatch):
    """With the limit lowered to 500 elements: inputs (320) and scratch (256) fit, the saved
    states (3 chunks × 16 × 16 = 768) do not, so only a launch under autograd is int64, and
    both variants give the same result."""
    mod = interp["causal_scan"]
    spy = _LaunchSpy(mod._scan_fwd)
    monkeypatch.setattr(mod, "_scan_fwd", spy)
    monkeypatch.setattr(mod, "INT32_LIMIT", 500)
    gen = torch.Generator().manual_seed(2)
    inputs = scan_inputs(gen, torch.float32, 1, 1, 40, 8, 4, True)
    mask = padding_mask(2, 40, "left", gen)[:1]
    args = [*inputs[:3], mask, *inputs[3:]]
    with torch.no_grad():
        out32 = mod.causal_lda_scan(*args, chunk_size=16, seg_chunks=3)
    out64 = mod.causal_lda_scan(*args, chunk_size=16, seg_chunks=3)
    assert spy.idx64 == [False, True]
    assert torch.equal(out32, out64.detach())


def test_causal_scan_int64_variant(interp, monkeypatch):
    """The int64-offset kernel (forced), with several segments: forward and gradients exact."""
    monkeypatch.setattr(interp["causal_scan"], "FORCE_INT64", True)
    check_scan(interp["causal_scan"], torch.float32, 3, 2, 37, 8, 5, "left", True, 16, None, seed=16)


def test_causal_scan_backward_ignores_autocast(interp):
    """backward() inside torch.autocast: the recomputation stays fp32 (equal gradients)."""
    mod = interp["causal_scan"]
    gen = torch.Generator().manual_seed(4)
    q1, k1, v1, q2, ck, cv, gk, gv = scan_inputs(gen, torch.float32, 2, 2, 37, 8, 5, True)
    mask = padding_mask(2, 37, "right", gen)
    inputs = [q1, k1, v1, mask, q2, ck, cv, gk, gv]
    leaves = [t for t in inputs if t.requires_grad]
    w = torch.randn(2, 2, 37, 8, generator=gen)
    ref = torch.autograd.grad((mod.causal_lda_scan(*inputs, chunk_size=16) * w).sum(), leaves)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mod.causal_lda_scan(*inputs, chunk_size=16)
        got = torch.autograd.grad((out * w).sum(), leaves)
    for a, r in zip(got, ref):
        assert a.dtype == r.dtype == torch.float32
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)


SCRATCH = {"SM", "SL", "SACC"}  # the scan's per-program state in global memory
WRITES_SCRATCH = {"_fallback"}  # helpers that rewrite it


def _tl_call_on_scratch(stmt, op: str) -> bool:
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == op and node.args:
            if {n.id for n in ast.walk(node.args[0]) if isinstance(n, ast.Name)} & SCRATCH:
                return True
    return False


def _calls(stmt, names) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names for n in ast.walk(stmt))


def _unordered_rewrites(body, pending: bool, found: list) -> bool:
    """Walk statements in program order; ``pending``: scratch was read since the last barrier.
    A scratch store (or a helper that stores) while pending is a race: other threads of the
    program may not have read the old value yet.  Loops are walked twice (iteration i+1)."""
    for stmt in body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "debug_barrier":
            pending = False
        elif isinstance(stmt, (ast.For, ast.While)):
            p = pending
            for _ in range(2):
                p = _unordered_rewrites(stmt.body, p, found)
            pending = pending or p
        elif isinstance(stmt, ast.If):
            pending = _unordered_rewrites(stmt.body, pending, found) | _unordered_rewrites(stmt.orelse, pending, found)
        else:
            if pending and (_tl_call_on_scratch(stmt, "store") or _calls(stmt, WRITES_SCRATCH)):
                found.append(stmt.lineno)
            if _tl_call_on_scratch(stmt, "load"):
                pending = True
    return pending


def test_scratch_rewrites_follow_a_barrier(interp):
    """In ``_scan_fwd`` and ``_fallback`` every rewrite of the scratch state comes after a
    ``tl.debug_barrier()`` that follows its last read (threads of a program read and write
    a slot in different layouts; the CPU interpreter cannot show the race, this can)."""
    tree = ast.parse(Path(interp["causal_scan"].__file__).read_text())
    fns = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name in ("_scan_fwd", "_fallback"):
        found: list[int] = []
        _unordered_rewrites(fns[name].body, False, found)
        assert not found, f"{name}: scratch rewritten at lines {sorted(set(found))} with no barrier after its read"
    probe: list[int] = []  # the walker itself: a read then a write with no barrier is caught
    _unordered_rewrites(ast.parse("x = tl.load(SM + i)\ntl.store(SM + i, x)").body, False, probe)
    assert probe == [2]


if not HAS_CUDA and not LATE:
    import triton
    import triton.language as tl

    ROUNDING = None  # the causal_scan module whose _round_mantissa _round_kernel calls

    @triton.jit
    def _round_kernel(X, Y, n, BITS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        keep = offs < n
        tl.store(Y + offs, ROUNDING._round_mantissa(tl.load(X + offs, mask=keep), BITS), mask=keep)


def test_operand_rounding_emulation_is_exact(interp):
    """_round_mantissa(x, 7) is bf16's round-to-nearest-even and (x, 10) fp16's, in range."""
    global ROUNDING
    ROUNDING = interp["causal_scan"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, generator=gen) * torch.logspace(-2, 2, 512)
    x[:4] = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-11), 1.0 + 3 * 2**-11])  # ties for bf16 / fp16
    for bits, ref in ((7, x.bfloat16().float()), (10, x.half().float())):
        y = torch.empty_like(x)
        _round_kernel[(1,)](x, y, x.numel(), BITS=bits, BLOCK=512)
        assert torch.equal(y, ref), bits


def test_scan_operand_precision_error(interp, monkeypatch):
    """The products of fp32 intermediates with rounded operands (emulated; fp32 inputs, so the
    operands are the only rounding): tf32 within METHODOLOGY's 1e-3, bf16 several times worse."""
    mod = interp["causal_scan"]
    gen = torch.Generator().manual_seed(6)
    q1, k1, v1, q2, ck, cv, gk, gv = scan_inputs(gen, torch.float32, 2, 2, 48, 16, 16, True)
    mask = padding_mask(3, 48, "left", gen)[:2]
    inputs = [t.detach() if t.is_floating_point() else t for t in (q1, k1, v1, mask, q2, ck, cv, gk, gv)]
    ref = torch_scan(*as_f64(inputs), chunk_size=16).detach()
    err = {}
    for bits in (0, 10, 7):
        monkeypatch.setattr(mod, "EMULATE_BITS", bits)
        with torch.no_grad():
            out = mod.causal_lda_scan(*inputs, chunk_size=16)
        err[bits] = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert err[0] < 1e-5 and err[10] < 1e-3 and err[7] > 3 * err[10], err


def test_causal_scan_refuses_tiles_over_64(interp):
    mod = interp["causal_scan"]
    gen = torch.Generator().manual_seed(0)
    for dh, k in ((8, 65), (72, 4)):
        q1, k1, v1, q2, ck, cv, gk, gv = scan_inputs(gen, torch.float32, 1, 1, 3, dh, k, True)
        with pytest.raises(ValueError, match="k, d_h <= 64"):
            mod.causal_lda_scan(q1, k1, v1, torch.ones(1, 3, dtype=torch.bool), q2, ck, cv, gk, gv)


# ---------------------------------------------------------------- attention dropout: the path that ran


@pytest.mark.parametrize("backend,objective", [("elastic", "last"), ("elastic-causal", "all")])
def test_training_with_dropout_records_the_torch_path(interp, monkeypatch, backend, objective):
    """The kernels have no attention dropout: a training step with dropout > 0 runs the
    PyTorch path even when the kernels are forced, and says so (backend_detail and reason);
    the same model in eval mode runs the kernels."""
    from elastic_bench.losses import next_item_loss
    from elastic_bench.recommender import ModelConfig, SeqRecModel

    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    torch.manual_seed(0)
    options = {"experts": 4, "memory_size": 16} if backend == "elastic" else {"experts": 4}
    cfg = ModelConfig.make(backend, 30, 12, options=options, d_model=16, heads=2, layers=1, dropout=0.2, causal=objective == "all")
    model = SeqRecModel(cfg).train()
    items = torch.randint(1, 31, (2, 12))
    targets = torch.randint(1, 31, (2, 12)) if objective == "all" else torch.randint(1, 31, (2,))
    next_item_loss(model, items, targets, objective, "full").backward()
    layer = model.encoder.blocks[0].attn
    assert model.backend_detail.startswith("torch:chunked-scan" if objective == "all" else "torch:sdpa")
    assert layer.kernel_reason == "triton unsupported: attention dropout p=0.2 (kernels have none)"
    model.eval()
    with torch.no_grad():
        model.user_repr(items)
    assert model.backend_detail.startswith("triton:") and layer.kernel_reason == ""


# ---------------------------------------------------------------- on a GPU


@pytest.mark.cuda
class TestCuda:
    """The compiled kernels at realistic shapes in bf16 / fp16 / fp32 (skipped without a GPU)."""

    DTYPES = [torch.bfloat16, torch.float16, torch.float32]

    @pytest.fixture(autouse=True)
    def _compiled(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        monkeypatch.delenv(kernels.ENV_VAR, raising=False)
        self.mods = {name: kernels.load(name) for name in ("pack", "unpack", "causal_scan", "product_keys")}

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(8, 2, 4096, 32, 32), (4, 2, 1000, 64, 64), (2, 4, 777, 16, 8)])
    def test_pack_unpack(self, dtype, shape):
        b, h, n, dh, k = shape
        check_pack(self.mods["pack"], dtype, b, h, n, dh, k, "left", True, None, None, 1, device="cuda")
        check_pack(self.mods["pack"], dtype, b, h, n, dh, k, "right", False, None, None, 2, device="cuda")
        check_unpack(self.mods["unpack"], dtype, b, h, n, dh, k, True, None, None, 3, device="cuda")
        check_unpack(self.mods["unpack"], dtype, b, h, n, dh, k, False, None, None, 4, device="cuda")

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,chunk", [((4, 2, 1024, 32, 32), 32), ((2, 2, 333, 64, 64), 16), ((2, 1, 200, 16, 8), 32)])
    def test_causal_scan(self, dtype, shape, chunk):
        b, h, n, dh, k = shape
        check_scan(self.mods["causal_scan"], dtype, b, h, n, dh, k, "left", True, chunk, None, 7, device="cuda")
        check_scan(self.mods["causal_scan"], dtype, b, h, n, dh, k, "right", False, chunk, 1, 8, device="cuda")

    def test_causal_scan_int64_variant(self, monkeypatch):
        monkeypatch.setattr(self.mods["causal_scan"], "FORCE_INT64", True)
        check_scan(self.mods["causal_scan"], torch.bfloat16, 2, 2, 333, 64, 64, "left", True, 16, None, 10, device="cuda")

    def test_causal_scan_backward_ignores_autocast(self):
        mod = self.mods["causal_scan"]
        gen = torch.Generator().manual_seed(4)
        q1, k1, v1, q2, ck, cv, gk, gv = scan_inputs(gen, torch.float32, 2, 2, 300, 32, 32, True, device="cuda")
        inputs = [q1, k1, v1, padding_mask(2, 300, "left", gen).cuda(), q2, ck, cv, gk, gv]
        leaves = [t for t in inputs if t.requires_grad]
        w = torch.randn(2, 2, 300, 32, generator=gen).cuda()
        ref = torch.autograd.grad((mod.causal_lda_scan(*inputs) * w).sum(), leaves)
        out = mod.causal_lda_scan(*inputs)
        with torch.autocast("cuda", dtype=torch.float16):  # fp16 products in the recomputation would be ~1e-3 off
            got = torch.autograd.grad((out * w).sum(), leaves)
        for a, r in zip(got, ref):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)

    def test_causal_scan_extreme_scores(self):
        check_scan(self.mods["causal_scan"], torch.float32, 2, 2, 200, 32, 16, "left", True, 32, None, 9, device="cuda", q1_scale=60.0)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_product_keys(self, dtype):
        gen = torch.Generator().manual_seed(0)
        for m, experts in [(65536, 32), (1 << 20, 32), (4096, 64)]:
            imr = ProductKeyMemory(64, experts, m).cuda()
            q = torch.randn(256, 64, generator=gen).cuda().to(dtype)
            k1, k2 = imr.keys1.detach().to(dtype), imr.keys2.detach().to(dtype)
            scores, idx = self.mods["product_keys"].product_key_retrieve(q, k1, k2, imr.topk, experts)
            full = ((q[:, :32].double() @ k1.double().t())[:, :, None] + (q[:, 32:].double() @ k2.double().t())[:, None, :]).flatten(1)
            best = full.topk(experts).values
            close(scores.double(), best, torch.float32 if dtype == torch.float32 else torch.bfloat16, "pk scores")
            if dtype == torch.float32:
                assert (idx == full.topk(experts).indices).float().mean().item() > 0.99

    @pytest.mark.parametrize("causal", [False, True])
    def test_layer_auto_uses_triton(self, causal):
        layer = LDALayer(64, 2, 0.0, causal).cuda().eval()
        x = torch.randn(4, 512, 64, device="cuda")
        mask = torch.ones(4, 512, dtype=torch.bool, device="cuda")
        mask[0, :100] = False
        p = torch.randn(1 if causal else 4, 32, 64, device="cuda")
        out, _ = layer(x, mask, p)
        assert layer.backend_detail.startswith("triton:"), layer.kernel_reason
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(kernels.ENV_VAR, "torch")
            ref, _ = layer(x, mask, p)
        real = mask[..., None]
        torch.testing.assert_close(out * real, ref * real, rtol=2e-3, atol=2e-3)
