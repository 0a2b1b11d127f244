"""FLOPs per pass: analytic counts against the FLOP counter, causal SDPA at its causal pairs,
and the labels of counts the counter cannot see (``counter+analytic`` or ``partial``).

Tolerance of the analytic-vs-counter comparisons: none (equality).  On the plain-PyTorch
paths both count the same matmuls, so any difference is a wrong formula.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _disable_current_modes

from bench_fakes import ExactAttention, dense_attention, registered
from elastic_bench import registry
from elastic_bench.attention import Backend, Capabilities
from elastic_bench.attention_flops import softmax_attention_flops
from elastic_bench.measure.cell import BACKWARD_PASSES, Cell
from elastic_bench.measure.flops import _causal_fraction, causal_pairs, count, pass_flops
from elastic_bench.measure.passes import build_workload
from elastic_bench.elastic import lda

B, N, D, H = 2, 100, 32, 2  # N: not a multiple of any chunk size


def make_cell(model: str, pass_: str = "infer", level: str = "op", causal: bool = False, n: int = 64, **kw) -> Cell:
    options = {**registry.get(model).capabilities.options, **kw.pop("options", {})}
    backward = pass_ in BACKWARD_PASSES
    return Cell(
        level=level, model=model, pass_=pass_, dtype="fp32", device="cpu", device_name="cpu", batch=2, seq_len=n,
        d_model=D, heads=H, layers=2, n_items=50, causal=causal, objective=("all" if causal else "last") if backward else "",
        loss="full" if backward else "", options=tuple(sorted(options.items())), **kw,
    )  # fmt: skip


def flops_of(cell: Cell, backend: type[Backend] | None = None) -> tuple[int, str]:
    work = build_workload(cell, torch.device("cpu"))
    return pass_flops(cell, backend or registry.get(cell.model), work.run, work.module, work.forward)


def analytic(backend: type[Backend], causal: bool, detail: str, lengths=None, **options) -> int | None:
    return backend.attention_flops(batch=B, seq_len=N, d_model=D, heads=H, causal=causal, options=options, detail=detail, lengths=lengths)


def padded_mask() -> torch.Tensor:
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, :37] = False  # left padding
    return mask


# ---- analytic == counter where the counter sees everything ----


@pytest.mark.parametrize("name", ["softmax", "sdpa", "sdpa-math", "sdpa-flash", "linear", "linformer", "linrec", "lightsans"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_token_mixing_analytic_equals_counter_on_plain_paths(name, causal, padded):
    backend = registry.get(name)
    if causal and not backend.capabilities.causal:
        pytest.skip("no causal variant")
    torch.manual_seed(0)
    module = backend.build(D, H, causal=causal)
    mask = padded_mask() if padded else torch.ones(B, N, dtype=torch.bool)
    q, k, v = module.project(torch.randn(B, N, D))
    counted, _ = count(lambda: module.attend(q, k, v, mask))
    lengths = tuple(int(x) for x in mask.sum(1))
    assert counted == analytic(backend, causal, module.backend_detail, lengths) > 0


def test_lda_paths_analytic_equals_counter():
    torch.manual_seed(0)
    elastic = registry.get("elastic")
    k = 8
    module = elastic.build(D, H, experts=k, memory_size=4096)
    layer, mask, x = module.layer, padded_mask(), torch.randn(B, N, D)
    with torch.no_grad():
        p = module.dispatchers(x, mask)
        q1, k1, v1 = layer.q1(layer.ln_pack(p)), layer.k1(x), layer.v1(x)
        pn = layer.ln_unpack(p + layer.o1(lda.merge_heads(lda.pack(q1, k1, v1, mask))))
        q2, k2, v2 = layer.q2(x), layer.k2(pn), layer.v2(pn)
        mixing = count(lambda: lda.pack(q1, k1, v1, mask))[0] + count(lambda: lda.unpack(q2, k2, v2))[0]
        query = module.source.query_vector(x, mask)
        retrieval = count(lambda: module.source.retrieve(query))[0]
    for detail in ("torch:sdpa", "triton:pack+unpack"):  # the Triton kernels compute the same products
        assert analytic(elastic, False, detail, experts=k) == mixing == 8 * B * N * k * D
    for detail in ("torch:topk", "triton:product-keys"):
        assert analytic(elastic, False, detail, experts=k, memory_size=4096) == retrieval == 2 * B * 64 * D
    # the 2.5x backward convention is what torch counts for the fused SDPA backward
    q1, k1, v1 = (t.detach().requires_grad_() for t in (q1, k1, v1))
    assert count(lambda: lda.pack(q1, k1, v1, mask).sum().backward())[0] == 3.5 * 4 * B * N * k * D


def test_elastic_paths_declare_what_the_counter_cannot_see():
    for name in ("elastic", "elastic-causal"):
        backend = registry.get(name)
        assert backend.counter_blind("triton:pack+unpack") == ("fwd", "bwd")  # Triton backward too
        assert backend.counter_blind("triton:causal-scan(c=32)") == ("fwd",)  # PyTorch backward, counted
        assert backend.counter_blind("triton:product-keys") == ("fwd",)
        assert backend.counter_blind("torch:sdpa") == backend.counter_blind("torch:chunked-scan(c=32)") == ()
    causal = registry.get("elastic-causal")
    assert analytic(causal, True, "torch:chunked-scan(c=32)", experts=8) is None  # counted as it runs
    assert analytic(causal, True, "triton:causal-scan(c=32)", experts=8) > 0


# ---- causal SDPA: the counter counts the causal pairs ----


def test_causal_pairs():
    assert causal_pairs(4, 4) == 10 and causal_pairs(1024, 1024) == 1024 * 1025 // 2
    assert causal_pairs(2, 4) == 1 + 2  # top-left: query i reads keys <= i
    assert causal_pairs(2, 4, bottom_right=True) == 3 + 4
    assert causal_pairs(4, 2, bottom_right=True) == 0 + 0 + 1 + 2


@pytest.mark.parametrize("backward", [False, True])
def test_causal_sdpa_counted_at_about_half(backward):
    n = 1024
    q, k, v = (torch.randn(1, 2, n, 16, requires_grad=backward) for _ in range(3))

    def run(causal):
        def call():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            if backward:
                out.sum().backward()

        return count(call)[0]

    full, causal = run(False), run(True)
    assert full == (3.5 if backward else 1) * 4 * 2 * n * n * 16
    assert causal == pytest.approx(full * (n + 1) / (2 * n), rel=1e-9)


def test_causal_sdpa_cells_count_half_the_attention_of_non_causal_ones():
    for pass_ in ("infer", "fwd_bwd"):
        n = 256
        (full, m1), (causal, m2) = (flops_of(make_cell("sdpa", pass_, causal=c, n=n)) for c in (False, True))
        (eager_full, _), (eager_causal, _) = (flops_of(make_cell("softmax", pass_, causal=c, n=n)) for c in (False, True))
        attention = 4 * 2 * n * n * D * (1 if pass_ == "infer" else 3.5)  # B = 2, the fused kernels' backward 2.5x
        assert m1 == m2 == "counter"
        assert full - causal == pytest.approx(attention * (n - 1) / (2 * n), rel=1e-9)
        assert eager_causal == eager_full  # eager computes the whole score matrix, then masks it


def test_causal_fraction_of_cuda_kernels_from_their_arguments():
    """CUDA-only ops, checked from their schemas and arguments (nothing is run)."""
    aten = torch.ops.aten
    n, q = 64, torch.empty(2, 4, 64, 16)
    flash = aten._scaled_dot_product_flash_attention
    assert _causal_fraction(flash.default, flash, (q, q, q, 0.0, True), {}) == (n + 1) / (2 * n)
    assert _causal_fraction(flash.default, flash, (q, q, q), {"is_causal": False}) == 1.0
    eff = aten._efficient_attention_forward  # [B, N, H, d]; custom_mask_type 2 = causal from bottom-right
    qe, ke = torch.empty(1, 3, 2, 16), torch.empty(1, 5, 2, 16)
    args = (qe, ke, ke, None, None, None, None, None, 0.0, 2)
    assert _causal_fraction(eff.default, eff, args, {}) == causal_pairs(3, 5, bottom_right=True) / 15
    varlen = aten._flash_attention_forward  # packed [total, H, d] with cumulative lengths 3 and 5
    qv, cu = torch.empty(8, 2, 16), torch.tensor([0, 3, 8], dtype=torch.int32)
    args = (qv, qv, qv, cu, cu, 5, 5, 0.0, True, False)
    assert _causal_fraction(varlen.default, varlen, args, {}) == (6 + 15) / (9 + 25)


# ---- paths the counter cannot see ----


class _Invisible(torch.autograd.Function):
    """Attention computed out of the counter's sight, as a Triton launch is (forward and backward)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal):
        ctx.save_for_backward(q, k, v)
        with _disable_current_modes():
            return dense_attention(q, k, v, mask, causal)

    @staticmethod
    def backward(ctx, g):
        with _disable_current_modes():
            return *(torch.zeros_like(t) for t in ctx.saved_tensors), None, None


class TritonLikeAttention(ExactAttention):
    detail = "triton:fake-attention"

    def attend(self, q, k, v, mask):
        self.backend_detail = self.detail
        return _Invisible.apply(q, k, v, mask, self.causal)


class FakeTritonNoCount(Backend):
    name = "fake-triton"
    summary = "a Triton-like kernel without an analytic count (test)"
    capabilities = Capabilities()
    module = TritonLikeAttention


class FakeTritonCounted(FakeTritonNoCount):
    name = "fake-triton-counted"

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None):
        return softmax_attention_flops([seq_len] * batch, heads, d_model // heads, causal)


@pytest.mark.parametrize("level", ["op", "model"])
@pytest.mark.parametrize("pass_", ["infer", "fwd_bwd"])
def test_triton_path_without_count_is_partial(level, pass_):
    with registered(FakeTritonNoCount):
        flops, method = flops_of(make_cell("fake-triton", pass_, level))
    assert method == "partial" and flops > 0  # the visible rest (projections, FFN, ...) is a lower bound


@pytest.mark.parametrize("level,calls", [("op", 1), ("model", 2)])
@pytest.mark.parametrize("pass_", ["infer", "fwd_bwd"])
def test_triton_path_with_count_is_counter_plus_analytic(level, calls, pass_):
    with registered(FakeTritonCounted):
        cell = make_cell("fake-triton-counted", pass_, level, causal=True)
        flops, method = flops_of(cell)
        work = build_workload(cell, torch.device("cpu"))
        visible, _ = count(work.run)
    attention = softmax_attention_flops([64, 64], H, D // H, causal=True)
    assert method == "counter+analytic"
    assert flops == visible + calls * attention * (3.5 if pass_ == "fwd_bwd" else 1)


def test_replacing_the_opaque_part_gives_the_visible_twins_count():
    """A Triton-like softmax with the analytic count equals eager softmax, counted op by op."""
    with registered(FakeTritonCounted):
        for level in ("op", "model"):
            ours = flops_of(make_cell("fake-triton-counted", "infer", level))
            eager = flops_of(make_cell("softmax", "infer", level))
            assert ours == (eager[0], "counter+analytic") and eager[1] == "counter"


@torch.library.custom_op("elastic_bench_test::opaque_attention", mutates_args=())
def opaque_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
    return dense_attention(q, k, v, mask, causal)


@opaque_attention.register_fake
def _(q, k, v, mask, causal):
    return torch.empty_like(q)


class CustomOpAttention(ExactAttention):
    def attend(self, q, k, v, mask):
        self.backend_detail = "fake-custom-op"  # says nothing about being opaque
        return opaque_attention(q, k, v, mask, self.causal)


class FakeCustomOp(Backend):
    name = "fake-custom-op"
    summary = "attention in an opaque custom op, path not declared (test)"
    capabilities = Capabilities()
    module = CustomOpAttention


def test_undeclared_op_from_outside_aten_makes_the_count_partial():
    with registered(FakeCustomOp):
        assert flops_of(make_cell("fake-custom-op", "infer"))[1] == "partial"


def test_flash_attn_and_xformers_declare_blind_kernels_and_count_real_tokens():
    for name in ("flash-attn", "xformers"):
        backend = registry.get(name)
        assert set(backend.counter_blind("")) == {"fwd", "bwd"}
        full = analytic(backend, False, "")
        assert full == 4 * B * N * N * D
        assert analytic(backend, True, "") == full * (N + 1) / (2 * N)
        assert analytic(backend, False, "", lengths=(N, 40, 0)) == 4 * (N * N + 40 * 40) * D
    sdpa = registry.get("sdpa")
    assert sdpa.counter_blind("cuda:flash") == ()  # ATen ops: counted, causal pairs included


def test_mocked_flash_attn_path_is_counter_plus_analytic_over_real_lengths(monkeypatch):
    flash = registry.get("flash-attn")
    seen = []

    def attend(self, q, k, v, mask):
        seen.append(tuple(int(x) for x in mask.sum(1)))
        self.backend_detail = "flash_attn_varlen_func"
        return _Invisible.apply(q, k, v, mask, self.causal)

    monkeypatch.setattr(flash.module, "attend", attend)
    cell = make_cell("flash-attn", "fwd_bwd", causal=True, padding="random")
    flops, method = flops_of(cell, flash)
    work = build_workload(cell, torch.device("cpu"))
    visible, _ = count(work.run)
    assert method == "counter+analytic" and any(n < 64 for n in seen[0])
    assert flops == visible + 3.5 * softmax_attention_flops(seen[0], H, D // H, causal=True)


def test_plain_backends_are_counted_by_the_counter():
    for model, causal in (("softmax", True), ("sdpa", True), ("linear", True), ("elastic", False), ("elastic-causal", True)):
        options = {"memory_size": 4096} if model == "elastic" else {}
        assert flops_of(make_cell(model, "fwd_bwd", "model", causal, options=options))[1] == "counter"


def test_real_triton_kernels_in_the_interpreter():
    """ELASTIC's Triton paths (interpreter): counter+analytic, and the same count as the PyTorch
    path (pack+unpack are the same products; IMR's top-k kernel has no matmul backward)."""
    pytest.importorskip("triton", reason="triton is not installed")
    script = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, "tests")
        from test_flops import flops_of, make_cell
        out = []
        for mode in ("torch", "triton"):
            os.environ["ELASTIC_BENCH_KERNELS"] = mode
            for pass_ in ("infer", "fwd_bwd"):
                out.append(flops_of(make_cell("elastic", pass_, options={"memory_size": 4096})))
            out.append(flops_of(make_cell("elastic-causal", "infer", causal=True)))
        print(repr(out))
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (t_inf, t_bwd, t_causal, k_inf, k_bwd, k_causal) = eval(res.stdout.strip().splitlines()[-1])
    assert t_inf[1] == t_bwd[1] == t_causal[1] == "counter"
    assert k_inf[1] == k_bwd[1] == k_causal[1] == "counter+analytic"
    assert k_inf[0] == t_inf[0]
    assert t_bwd[0] - k_bwd[0] == 4 * 2 * 64 * D  # IMR scores' matmul backward (dq, dK): PyTorch path only
    assert k_causal[0] > 0 and t_causal[0] > 0
