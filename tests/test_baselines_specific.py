"""Checks of individual baselines that the generic conformance file cannot see: which SDPA
kernel ran, the chunked causal linear attention at awkward chunk sizes, Linformer at long
length, the non-causal declarations, and (marked ``cuda``) the GPU-only kernels against
the exact softmax oracle in fp16/bf16 with padding and causal masks."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from baselines import sdpa as sdpa_mod
from baselines.linear import LinearBackend
from baselines.linformer import LinformerBackend, pool_matrix
from elastic_bench import registry
from elastic_bench.attention import masked_softmax_reference

F64 = torch.float64


def padding_mask(lengths: list[int], n: int, side: str) -> torch.Tensor:
    pos = torch.arange(n)[None, :]
    length = torch.tensor(lengths)[:, None]
    return pos >= n - length if side == "left" else pos < length


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().to(expected.dtype), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------- SDPA (CPU)


def test_sdpa_records_the_kernel_pytorch_chose() -> None:
    torch.manual_seed(0)
    attn = registry.build("sdpa", 16, 2, causal=True).eval()
    x = torch.randn(2, 9, 16)
    full = torch.ones(2, 9, dtype=torch.bool)
    padded = padding_mask([9, 4], 9, "left")
    for mask in (full, padded):
        attn(x, mask)
        assert attn.backend_detail in {"cpu:flash", "cpu:math"}, attn.backend_detail
        # the record follows PyTorch's dispatcher, not a guess: pin math and it says math
        with sdpa_kernel(SDPBackend.MATH):
            attn(x, mask)
        assert attn.backend_detail == "cpu:math"
    # the CPU flash kernel has no dropout, so training with dropout runs (and records) math
    dropping = registry.build("sdpa", 16, 2, dropout=0.3, causal=True).train()
    dropping(x, full)
    assert dropping.backend_detail == "cpu:math"


def test_sdpa_kernel_probe_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``torch._fused_sdp_choice`` the kernel is found by probing, once per signature."""
    monkeypatch.delattr(torch, "_fused_sdp_choice", raising=False)
    monkeypatch.setattr(sdpa_mod, "_probe_cache", {})
    q = k = v = torch.randn(1, 2, 5, 8)
    assert sdpa_mod.chosen_kernel(q, k, v, None, 0.0, True) in {"cpu:flash", "cpu:math"}
    with sdpa_kernel(SDPBackend.MATH):
        monkeypatch.setattr(sdpa_mod, "_probe_cache", {})
        assert sdpa_mod.chosen_kernel(q, k, v, None, 0.0, True) == "cpu:math"


@pytest.mark.parametrize("name,kernel", [("sdpa-flash", "cpu:flash"), ("sdpa-math", "cpu:math")])
def test_pinned_sdpa_records_its_kernel(name: str, kernel: str) -> None:
    attn = registry.build(name, 16, 2, causal=True).eval()
    attn(torch.randn(2, 9, 16), padding_mask([9, 3], 9, "left"))
    assert attn.backend_detail == kernel


def test_sdpa_flash_cpu_refuses_dropout_in_training() -> None:
    attn = registry.build("sdpa-flash", 16, 2, dropout=0.2).train()
    with pytest.raises(ValueError, match="no dropout"):
        attn(torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool))
    attn.eval()(torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool))  # eval: no dropout, runs


def test_sdpa_fully_masked_rows_stay_finite() -> None:
    """Causal left padding: padding queries have no real key before them; no NaN anywhere."""
    attn = registry.build("sdpa", 16, 2, causal=True).double().eval()
    x = torch.randn(2, 8, 16, dtype=F64, requires_grad=True)
    out = attn(x, padding_mask([8, 3], 8, "left"))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------- linear


@pytest.mark.parametrize("side", ["none", "left", "right"])
@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64])
def test_linear_causal_chunks_match_reference(chunk_size: int, side: str) -> None:
    torch.manual_seed(0)
    attn = LinearBackend.build(16, 2, causal=True, chunk_size=chunk_size).double().eval()
    n = 37  # not a multiple of any chunk size above
    mask = padding_mask([37, 20, 1] if side != "none" else [37] * 3, n, side)
    x = torch.randn(3, n, 16, dtype=F64)
    out, ref = attn(x, mask), LinearBackend.reference(attn, x, mask)
    assert attn.backend_detail == f"linear:chunked(C={chunk_size})"
    assert rel_err(out[mask], ref[mask]) < 1e-10
    assert torch.isfinite(out).all()


def test_linear_non_causal_matches_reference() -> None:
    torch.manual_seed(0)
    attn = LinearBackend.build(16, 2).double().eval()
    mask = padding_mask([37, 5], 37, "left")
    x = torch.randn(2, 37, 16, dtype=F64)
    assert rel_err(attn(x, mask)[mask], LinearBackend.reference(attn, x, mask)[mask]) < 1e-10


# ---------------------------------------------------------------------------- linformer


def test_linformer_pooling_is_adaptive_average_pooling() -> None:
    """Without padding, the projection's pooling is exactly ``F.adaptive_avg_pool1d``."""
    for n, r in [(5, 8), (64, 8), (37, 8), (8, 8), (1, 4)]:
        t = torch.randn(2, n, dtype=F64)
        pool = pool_matrix(torch.ones(2, n, dtype=torch.bool), r, F64)
        expected = torch.nn.functional.adaptive_avg_pool1d(t[:, None, :], r)[:, 0]
        assert torch.allclose(torch.einsum("brn,bn->br", pool, t), expected, atol=1e-12), (n, r)


def test_linformer_long_sequence_linear_memory() -> None:
    """N = 5000, proj_len = 64 on CPU: quick, and nothing of size N x N is kept for backward."""
    torch.manual_seed(0)
    b, n, d, heads, r = 2, 5000, 32, 2, 64
    attn = LinformerBackend.build(d, heads, proj_len=r)
    x = torch.randn(b, n, d, requires_grad=True)
    mask = padding_mask([5000, 3100], n, "left")
    largest = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        largest = max(largest, t.numel())
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = attn(x, mask)
    out[mask].sum().backward()
    elapsed = time.perf_counter() - start
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert largest <= b * heads * n * r, f"a saved tensor has {largest} elements (N^2 = {n * n})"
    assert elapsed < 30, f"forward+backward took {elapsed:.1f} s"


# ---------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", ["linformer", "linrec", "lightsans"])
def test_non_causal_only_backends_refuse_causal(name: str) -> None:
    cls = registry.get(name)
    assert not cls.capabilities.causal
    assert cls.unavailable_reason("cpu", torch.float32, causal=True) == "no causal variant"
    with pytest.raises(ValueError):
        cls.build(16, 2, causal=True)


@pytest.mark.parametrize("name", ["flash-attn", "xformers", "sdpa-mem-efficient"])
def test_gpu_only_backends_say_why_on_cpu(name: str) -> None:
    reason = registry.get(name).unavailable_reason("cpu", torch.float16)
    assert reason is not None and reason


def test_optional_packages_not_imported_at_module_import() -> None:
    """Importing the flash-attn and xformers baselines imports neither package (fresh process)."""
    code = (
        "import sys, baselines.flash_attn, baselines.xformers\n"
        "leaked = [m for m in ('flash_attn', 'xformers') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------- CUDA kernels

CUDA_BACKENDS = ["flash-attn", "xformers", "sdpa", "sdpa-flash", "sdpa-mem-efficient", "sdpa-math"]


@pytest.mark.cuda
@pytest.mark.parametrize("side", ["none", "left", "right"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_cuda_kernel_matches_softmax_oracle(name: str, dtype: torch.dtype, causal: bool, side: str) -> None:
    """Forward and input gradient in fp16/bf16 against the exact softmax oracle run in fp32
    with the same parameters (METHODOLOGY: bf16/fp16 <= 2e-2 relative).  Cases a backend
    cannot serve (sdpa-flash with padding, a missing package) skip with its own reason."""
    cls = registry.get(name)
    d, heads = 128, 2
    padded = side != "none"
    reason = cls.unavailable_reason("cuda", dtype, causal, d // heads, padding=padded)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    torch.manual_seed(0)
    attn = cls.build(d, heads, causal=causal).to("cuda", dtype).eval()
    attn32 = copy.deepcopy(attn).float()
    n = 77
    lengths = [77, 40, 1] if padded else [77, 77, 77]
    mask = padding_mask(lengths, n, side if padded else "right").cuda()
    x = torch.randn(3, n, d, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(3, n, d, device="cuda")

    out = attn(x, mask)
    x32 = x.detach().float().requires_grad_(True)
    q, k, v = attn32.project(x32)
    ref = attn32.out_proj(attn32.merge_heads(masked_softmax_reference(q, k, v, mask, causal)))
    assert out.dtype == dtype
    assert rel_err(out[mask], ref[mask]) <= 2e-2, f"{name} forward: {rel_err(out[mask], ref[mask]):.3e}"

    (out.float() * w)[mask].sum().backward()
    (ref * w)[mask].sum().backward()
    assert rel_err(x.grad[mask], x32.grad[mask]) <= 2e-2, f"{name} grad: {rel_err(x.grad[mask], x32.grad[mask]):.3e}"
    if padded:
        assert float(x.grad[~mask].abs().max()) <= 1e-6, f"{name}: gradient reaches padding"

    detail = attn.backend_detail
    assert detail and "unknown" not in detail and not detail.endswith(":auto"), detail
    if name == "flash-attn":
        assert detail == ("flash_attn_varlen_func" if padded else "flash_attn_func")
    elif name == "xformers":
        assert detail.startswith("xformers:")
    else:
        assert detail.startswith("cuda:")


@pytest.mark.cuda
def test_cuda_sdpa_flash_refuses_padding() -> None:
    cls = registry.get("sdpa-flash")
    assert cls.unavailable_reason("cuda", torch.float16, True, 64, padding=True) is not None
    attn = cls.build(128, 2, causal=True).to("cuda", torch.float16)
    with pytest.raises(ValueError, match="no attention mask"):
        attn(torch.randn(2, 8, 128, device="cuda", dtype=torch.float16), padding_mask([8, 3], 8, "left").cuda())
