"""ELASTIC against its naive references: LDA (both variants), the causal scan, IMR, the encoder."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch

from elastic_bench.elastic.causal import causal_lda_scan
from elastic_bench.elastic.imr import ProductKeyMemory, StaticDispatchers, dispatcher_source, slots_to_side
from elastic_bench.elastic.lda import LDALayer
from elastic_bench.elastic.naive import lda_reference
from elastic_bench.recommender import ModelConfig, SeqRecModel

F64 = torch.float64


def random_mask(b: int, n: int, gen: torch.Generator, side: str = "left") -> torch.Tensor:
    """Random lengths (at least one real token in all but possibly the last row), padded on ``side``."""
    lengths = torch.randint(1, n + 1, (b,), generator=gen)
    ar = torch.arange(n)
    mask = ar[None, :] >= (n - lengths)[:, None] if side == "left" else ar[None, :] < lengths[:, None]
    if b > 2:
        mask[-1] = False  # an all-padding row must not break anything
    return mask


def stable_seed(*key: object) -> int:
    """A seed from ``key`` that is the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(repr(key).encode())


def grads(out: torch.Tensor, weight: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
@pytest.mark.parametrize("shape", [(1, 1, 16, 2, 4), (3, 13, 24, 3, 5), (2, 33, 16, 2, 8)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_lda_matches_naive_reference(causal, chunk, shape, side):
    """Forward and every gradient of the fast LDA layer equal the naive reference in float64."""
    b, n, d, h, k = shape
    gen = torch.Generator().manual_seed(stable_seed(causal, chunk, shape, side))
    layer = LDALayer(d, h, 0.0, causal, ffn_mult=2, chunk_size=chunk).to(F64).eval()
    for prm in layer.parameters():  # non-trivial LayerNorm affines and biases
        prm.data.normal_(0, 0.5, generator=gen)
    x = torch.randn(b, n, d, dtype=F64, generator=gen, requires_grad=True)
    mask = random_mask(b, n, gen, side)
    p = torch.randn(1 if causal else b, k, d, dtype=F64, generator=gen, requires_grad=True)
    out, p_next = layer(x, mask, p)
    ref, ref_next = lda_reference(layer, x, mask, p)
    real = mask[..., None]
    torch.testing.assert_close(out * real, ref * real, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(p_next, ref_next, rtol=1e-9, atol=1e-10)
    w = torch.randn(out.shape, dtype=F64, generator=gen) * real
    wp = torch.randn(p_next.shape, dtype=F64, generator=gen)
    inputs = [x, p, *layer.parameters()]
    g_fast = torch.autograd.grad((out * w).sum() + (p_next * wp).sum(), inputs, allow_unused=True)
    g_ref = torch.autograd.grad((ref * w).sum() + (ref_next * wp).sum(), inputs, allow_unused=True)
    for gf, gr in zip(g_fast, g_ref):
        assert (gf is None) == (gr is None)
        if gf is not None:
            torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)
    assert g_fast[0][~mask].abs().max().item() == 0.0 if (~mask).any() else True  # no gradient into padding


def test_causal_lda_has_no_unused_parameters():
    layer = LDALayer(16, 2, causal=True)
    assert layer.ln_unpack is None
    x, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    out, p = layer(x, mask, torch.randn(1, 4, 16))
    (out.sum() + p.sum()).backward()
    assert all(prm.grad is not None for prm in layer.parameters())


@pytest.mark.parametrize("scale", [80.0, -80.0])
def test_causal_scan_finite_with_large_scores(scale):
    """Scores of ±80 (exp overflows fp32 at 88) stay finite and match the float64 reference."""
    gen = torch.Generator().manual_seed(7)
    layer = LDALayer(16, 2, causal=True, chunk_size=5).eval()
    b, n, k = 2, 23, 4
    x = torch.randn(b, n, 16, generator=gen)
    mask = random_mask(b, n, gen)
    p = torch.randn(1, k, 16, generator=gen)
    with torch.no_grad():
        # make q1·k1 / √d_h ≈ ±80: large pack queries and keys
        layer.q1.linear.weight.mul_(0).add_(torch.eye(16) * 9.0)
        layer.k1.linear.weight.mul_(0).add_(torch.eye(16) * scale / 9.0 * 1.0)
    out, _ = layer(x, mask, p)
    assert torch.isfinite(out).all()
    ref, _ = lda_reference(layer.double(), x.double(), mask, p.double())
    torch.testing.assert_close(out.double() * mask[..., None], ref * mask[..., None], rtol=1e-3, atol=1e-3)


def test_causal_scan_extreme_scores_fp32():
    """Direct scan inputs with scores spread over [-80, 80] within one chunk: no NaN or inf."""
    gen = torch.Generator().manual_seed(3)
    b, h, n, dh, k = 1, 1, 9, 1, 2
    q1 = torch.ones(b, h, k, dh)
    k1 = (torch.linspace(-80, 80, n) * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1, 1])).view(1, 1, n, 1)
    v1 = torch.randn(b, h, n, dh, generator=gen)
    q2 = torch.randn(b, h, n, dh, generator=gen)
    ck = cv = torch.randn(1, h, k, dh, generator=gen)
    gk = gv = torch.randn(h, h, dh, dh, generator=gen)
    out = causal_lda_scan(q1, k1, v1, torch.ones(b, n, dtype=torch.bool), q2, ck, cv, gk, gv, chunk_size=4)
    assert torch.isfinite(out).all()


def test_causal_scan_memory_is_per_chunk():
    """Under autograd the scan keeps no O(N·k·d) intermediate: chunks are recomputed in backward."""
    layer = LDALayer(32, 2, causal=True, chunk_size=32)
    b, n, k, d = 1, 1024, 64, 32
    x = torch.randn(b, n, d, requires_grad=True)
    p = torch.randn(1, k, d, requires_grad=True)
    saved: list[int] = []

    def pack_hook(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        out, _ = layer(x, torch.ones(b, n, dtype=torch.bool), p)
    out.sum().backward()
    # without per-chunk recomputation this is ~8·N·k·d; with it, O(N·d + (N/c)·k·d)
    assert sum(saved) < n * k * d / 2, f"{sum(saved)} saved elements ~ O(N·k·d)"
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_imr_matches_brute_force_topk():
    gen = torch.Generator().manual_seed(0)
    for m, experts, d in [(1024, 8, 16), (4096, 32, 32), (16, 4, 8)]:
        imr = ProductKeyMemory(d, experts, m).double()
        e = torch.randn(6, 11, d, dtype=F64, generator=gen)
        mask = random_mask(6, 11, gen)
        mask[-1, -1] = True
        q = imr.query_vector(e, mask)
        scores, idx = imr.retrieve(q)
        n = slots_to_side(m)
        full = ((q[:, : d // 2] @ imr.keys1.t())[:, :, None] + (q[:, d // 2 :] @ imr.keys2.t())[:, None, :]).flatten(1)
        bscores, bidx = full.topk(experts)
        assert torch.equal(idx, bidx)
        torch.testing.assert_close(scores, bscores)
        assert idx.max() < n * n
        torch.testing.assert_close(imr(e, mask), imr.reference(e, mask))


def test_imr_routes_in_fp32_whatever_the_dtype():
    """bf16 IMR (and fp32 weights under bf16 autocast) picks the slots that the same rounded
    model picks in float64, at the default 64k slots (bf16 scores picked ~1/3 others)."""
    gen = torch.Generator().manual_seed(3)
    imr = ProductKeyMemory(64, 32, 65536).to(torch.bfloat16)
    e = torch.randn(8, 50, 64, generator=gen).to(torch.bfloat16)
    mask = random_mask(8, 50, gen)
    mask[:, -1] = True
    imr64 = copy.deepcopy(imr).double()
    q = imr.query_vector(e, mask)
    scores, idx = imr.retrieve(q)
    _, ref = imr64.retrieve(imr64.query_vector(e.double(), mask))
    assert q.dtype == scores.dtype == torch.float32 and imr(e, mask).dtype == torch.bfloat16
    assert torch.equal(idx.sort(-1).values, ref.sort(-1).values)
    imr32 = copy.deepcopy(imr).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_ac = imr32.query_vector(e, mask)
        s_ac, idx_ac = imr32.retrieve(q_ac)
        out = imr32(e, mask)
    assert q_ac.dtype == s_ac.dtype == out.dtype == torch.float32
    assert torch.equal(idx_ac.sort(-1).values, ref.sort(-1).values)


def test_imr_gradients_reach_keys_and_values():
    imr = ProductKeyMemory(16, 8, 256)
    e, mask = torch.randn(4, 9, 16), torch.ones(4, 9, dtype=torch.bool)
    imr(e, mask).pow(2).sum().backward()
    for name in ("keys1", "keys2", "slot_emb"):
        g = getattr(imr, name).grad
        assert g is not None and g.abs().sum() > 0, name
    assert imr.values.weight.grad.abs().sum() > 0
    assert imr.query.weight.grad.abs().sum() > 0


def test_imr_sparse_grad_option():
    imr = ProductKeyMemory(16, 4, 64, sparse_grad=True)
    imr(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)).sum().backward()
    assert imr.values.weight.grad.is_sparse


def test_imr_query_pool_last_reads_most_recent_real_item():
    imr = ProductKeyMemory(8, 2, 16, query_pool="last")
    e = torch.randn(2, 4, 8)
    mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    e2 = e.clone()
    e2[0, 1] += 5.0  # not the last real item of row 0
    torch.testing.assert_close(imr.query_vector(e, mask), imr.query_vector(e2, mask))


@pytest.mark.parametrize("bad", [1000, 3, 2048, -4])
def test_memory_size_must_be_a_perfect_square(bad):
    with pytest.raises(ValueError, match="perfect square"):
        slots_to_side(bad)


def test_imr_argument_errors():
    with pytest.raises(ValueError, match="topk"):
        ProductKeyMemory(16, 8, 16, topk=8)  # 8 > 4 sub-keys
    with pytest.raises(ValueError, match="candidates"):
        ProductKeyMemory(16, 32, 1024, topk=4)
    with pytest.raises(ValueError, match="query_pool"):
        ProductKeyMemory(16, 4, 64, query_pool="max")
    assert isinstance(dispatcher_source(16, 4, 0, None), StaticDispatchers)


def _model(backend: str, **opts) -> SeqRecModel:
    torch.manual_seed(0)
    cfg = ModelConfig.make(backend, n_items=50, max_len=40, d_model=16, heads=2, layers=2, dropout=0.0, options=opts)
    return SeqRecModel(cfg).double().eval()


def test_elastic_causal_encoder_does_not_read_the_future():
    model = _model("elastic-causal", experts=4, chunk_size=3)
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, 51, (3, 17), generator=gen)
    items[0, :5] = 0
    base = model(items)
    for t in (4, 8, 15):
        other = items.clone()
        other[:, t + 1 :] = torch.randint(1, 51, other[:, t + 1 :].shape, generator=gen)
        torch.testing.assert_close(model(other)[:, : t + 1], base[:, : t + 1], rtol=1e-10, atol=1e-12)


def test_elastic_noncausal_encoder_reads_the_whole_sequence():
    """The non-causal variant does see the future (why it trains with the last-position objective)."""
    model = _model("elastic", experts=4, memory_size=16)
    items = torch.randint(1, 51, (2, 12), generator=torch.Generator().manual_seed(2))
    other = items.clone()
    other[:, -1] = (other[:, -1] % 50) + 1
    assert (model(other)[:, 0] - model(items)[:, 0]).abs().max() > 1e-6


def test_elastic_encoder_padding_invariance_and_dispatchers_carried():
    model = _model("elastic", experts=4, memory_size=64)
    items = torch.randint(1, 51, (2, 10), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(2, 6, dtype=torch.long), items], dim=1)
    torch.testing.assert_close(model(padded)[:, 6:], model(items), rtol=1e-10, atol=1e-12)
    # the second layer's dispatchers depend on the first layer's pack: changing an item changes P¹
    enc = model.encoder
    h, mask, e = model.embed(items)
    p0 = enc.source(e, mask)
    _, p1 = enc.blocks[0].attn(enc.blocks[0].ln1(h), mask, p0)
    assert p1.shape == (2, 4, 16) and not torch.allclose(p1, p0)


def test_imr_flops_flat_in_memory_size():
    """Capacity without compute: the retrieval's FLOPs grow with √M (sub-keys), not M."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for m in (1024, 16384, 262144):
        imr = ProductKeyMemory(32, 8, m)
        e, mask = torch.randn(4, 20, 32), torch.ones(4, 20, dtype=torch.bool)
        with FlopCounterMode(display=False) as fc:
            imr(e, mask)
        flops[m] = fc.get_total_flops()
    assert flops[262144] < 20 * flops[1024]  # 256× the slots, far less than 256× the work


def test_causal_scan_gradients_finite_with_score_jumps_and_left_padding():
    """A score jump > 88 inside a chunk and positions before the first real token: finite gradients."""
    gen = torch.Generator().manual_seed(5)
    b, h, n, dh, k = 2, 1, 8, 2, 2
    q1 = torch.ones(b, h, k, dh, requires_grad=True)
    k1 = torch.zeros(b, h, n, dh)
    k1[..., 5, :] = 60.0  # score 120 at s=5 while earlier rows' references are ~0
    k1.requires_grad_(True)
    v1 = torch.randn(b, h, n, dh, generator=gen, requires_grad=True)
    q2 = torch.randn(b, h, n, dh, generator=gen, requires_grad=True)
    ck = cv = torch.randn(1, h, k, dh, generator=gen)
    gk = gv = torch.randn(h, h, dh, dh, generator=gen)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, :3] = False  # left padding: positions 0-2 of row 1 have no real token yet
    out = causal_lda_scan(q1, k1, v1, mask, q2, ck, cv, gk, gv, chunk_size=8)
    out.pow(2).sum().backward()  # every position carries a gradient, padding included
    for t in (q1, k1, v1, q2):
        assert torch.isfinite(t.grad).all()


def test_op_level_backend_detail_follows_the_layer():
    from elastic_bench import registry

    attn = registry.build("elastic", 16, 2, experts=4, memory_size=16)
    attn.layer.backend_detail = "triton:pack+unpack"
    assert attn.backend_detail == "triton:pack+unpack"


def test_causal_scan_half_precision_keeps_fp32_state():
    """bf16 inputs: the scan runs in fp32, so the error is bf16 input rounding, not accumulated."""
    gen = torch.Generator().manual_seed(11)
    layer = LDALayer(16, 2, causal=True, chunk_size=8).double().eval()
    x = torch.randn(1, 300, 16, dtype=F64, generator=gen)
    mask = torch.ones(1, 300, dtype=torch.bool)
    p = torch.randn(1, 4, 16, dtype=F64, generator=gen)
    ref, _ = layer(x, mask, p)
    out, _ = layer.to(torch.bfloat16)(x.to(torch.bfloat16), mask, p.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < 2e-2
