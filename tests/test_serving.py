"""Serving paths (issue 13): ``serve`` equals the full forward's last real position, ``serve_step``
after t appended items equals a fresh ``serve`` on the t-longer history, and the state's bytes
are the formula's; for every registered backend that runs on this CPU, in float64, with left
padding and all-padding rows, both block styles.

The cases come from :func:`elastic_bench.registry.names`, so a new backend is covered when it is
registered (a third-party one through the generic fallbacks).  CUDA-only backends' serving
paths are covered by the ``cuda``-marked test at the end.
"""

from __future__ import annotations

import pytest
import torch

from elastic_bench import registry
from elastic_bench.attention import Attention, Backend, Capabilities, KVCache
from elastic_bench.recommender import ModelConfig, SeqRecModel
from elastic_bench.serving import state_bytes

F64 = torch.float64
TOL = 1e-10
SMALL = {"experts": 4, "memory_size": 16, "chunk_size": 4, "proj_len": 8, "interests": 4, "topk": 4}


def _modes(cls) -> list[bool]:
    cap = cls.capabilities
    return [c for c in (True, False) if (cap.causal if c else cap.non_causal)]


def _cpu(name: str) -> bool:
    return registry.get(name).unavailable_reason("cpu", F64, padding=True) is None


CASES = [pytest.param(n, c, id=f"{n}-{'causal' if c else 'full'}") for n in registry.names() for c in _modes(registry.get(n)) if _cpu(n)]


def make_model(name: str, causal: bool, block: str = "pre-ln", max_len: int = 40, layers: int = 2, d: int = 16, heads: int = 2) -> SeqRecModel:
    cls = registry.get(name)
    opts = {k: v for k, v in SMALL.items() if isinstance(cls.capabilities.options.get(k), int) and cls.capabilities.options[k] > v}
    cfg = ModelConfig.make(name, 50, max_len, options=opts, d_model=d, heads=heads, layers=layers, dropout=0.0, causal=causal, block=block)
    torch.manual_seed(0)
    return SeqRecModel(cfg).to(F64).eval()


def left_padded(lengths: list[int], n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 51, (len(lengths), n), generator=g)
    mask = torch.arange(n)[None, :] >= (n - torch.tensor(lengths))[:, None]
    return items * mask


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("block", ["pre-ln", "sasrec"])
@pytest.mark.parametrize("name,causal", CASES)
def test_serve_equals_full_forward_last_position(name, causal, block):
    model = make_model(name, causal, block)
    items = left_padded([20, 13, 1, 0], 20)  # left padding, a one-item row and an all-padding row
    with torch.inference_mode():
        want = model(items)[:, -1]
        got = model.serve(items)
        full = model.serve(left_padded([20, 20], 20))  # no padding: the unmasked fast paths
        full_want = model(left_padded([20, 20], 20))[:, -1]
    assert torch.isfinite(got).all()
    assert rel(got, want) < TOL, model.backend_detail
    assert rel(full, full_want) < TOL


@pytest.mark.parametrize("name,causal", CASES)
def test_serve_step_equals_fresh_serve_on_longer_history(name, causal):
    model = make_model(name, causal)
    t = 5
    hist = left_padded([12, 7, 1, 0], 12)
    new = torch.randint(1, 51, (4, t), generator=torch.Generator().manual_seed(2))  # appended items are real
    with torch.inference_mode():
        state = model.init_serving(hist)
        for i in range(t):
            got, state = model.serve_step(state, new[:, i])
            want = model.serve(torch.cat([hist, new[:, : i + 1]], 1))
            assert rel(got, want) < TOL, (i, state.mode, model.backend_detail)
        assert state.n == 12 + t and state.lengths.tolist() == [12 + t, 7 + t, 1 + t, t]
    stateful = causal and name in ("softmax", "linear", "elastic-causal") or (causal and name.startswith("sdpa")) or name == "no-mixing"
    assert state.mode == ("state" if stateful else "recompute"), state.mode


@pytest.mark.parametrize("name", ["softmax", "sdpa", "linear", "elastic-causal"])
def test_step_repeated_from_one_state_is_the_same_step(name):
    """The benchmark times one step from one state many times: each must give the same output."""
    model = make_model(name, True)
    items = left_padded([10, 4], 10)
    with torch.inference_mode():
        state = model.init_serving(items)
        new = torch.tensor([3, 7])
        a, s1 = model.serve_step(state, new)
        b, s2 = model.serve_step(state, new)
        other, _ = model.serve_step(state, torch.tensor([9, 9]))
        c, _ = model.serve_step(state, new)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, other)
    assert s1.n == s2.n == 11


def test_kv_cache_grows_past_its_capacity():
    model = make_model("sdpa", True, max_len=60)
    items = left_padded([3, 2], 3)
    new = torch.randint(1, 51, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        state = model.init_serving(items)
        for i in range(30):
            got, state = model.serve_step(state, new[:, i])
        want = model.serve(torch.cat([items, new], 1))
    assert rel(got, want) < TOL
    assert isinstance(state.layers[0], KVCache) and state.layers[0].k.shape[2] >= 33


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_state_bytes_match_the_formulas(layers, dtype):
    d, h, n, b = 16, 2, 24, dtype.itemsize
    dh, k = d // h, SMALL["experts"]
    expect = {
        "softmax": layers * 2 * n * d * b + 8,
        "sdpa": layers * 2 * n * d * b + 8,
        "linear": layers * h * (dh * dh + dh) * b + 8,
        "elastic-causal": layers * h * k * (dh + 2) * b + 8,
    }
    items = left_padded([24, 9, 0], n)
    for name, total in expect.items():
        model = make_model(name, True, layers=layers).to(dtype)
        with torch.inference_mode():
            state = model.init_serving(items)
        assert state_bytes(model, state) == (total, (total - 8) // layers), name
    model = make_model("elastic", False, layers=layers).to(dtype)
    with torch.inference_mode():
        state = model.init_serving(items)
    assert state.mode == "recompute" and state_bytes(model, state) == (n * 8, 0)


def test_kv_state_bytes_count_the_used_length_not_the_capacity():
    model = make_model("softmax", True, layers=1)
    with torch.inference_mode():
        state = model.init_serving(left_padded([8, 8], 8))
        _, state = model.serve_step(state, torch.tensor([1, 2]))
    assert state_bytes(model, state)[0] == 2 * 9 * 16 * 8 + 8


class _Plain(Attention):
    """A third-party attention with no serving code: mean over the real keys up to each position."""

    def __init__(self, d_model, heads, dropout=0.0, causal=False):
        super().__init__(d_model, heads, dropout, causal)
        self.proj = torch.nn.Linear(d_model, d_model)
        self.backend_detail = "plain"  # set once, never by forward (as the no-mixing floor does)

    def forward(self, x, mask):
        m = mask[..., None].to(x.dtype)
        csum = (self.proj(x) * m).cumsum(1) if self.causal else (self.proj(x) * m).sum(1, keepdim=True)
        cnt = m.cumsum(1) if self.causal else m.sum(1, keepdim=True)
        return csum / cnt.clamp_min(1)

    def reference(self, x, mask):
        return self.forward(x, mask)


class _PlainBackend(Backend):
    name = "test-plain-serving"
    capabilities = Capabilities()
    module = _Plain


@pytest.mark.parametrize("causal", [True, False])
def test_third_party_backend_serves_through_the_fallbacks(causal):
    registry.register(_PlainBackend, replace=True)
    try:
        model = make_model("test-plain-serving", causal)
        items = left_padded([9, 3, 0], 9)
        with torch.inference_mode():
            got = model.serve(items)
            assert "full-then-last:plain" in model.backend_detail
            model.serve(items)
            assert "full-then-last:full-then-last" not in model.backend_detail  # stable call after call
            assert rel(got, model(items)[:, -1]) < TOL
            state = model.init_serving(items)
            got, state = model.serve_step(state, torch.tensor([4, 5, 6]))
            want = model.serve(torch.cat([items, torch.tensor([[4], [5], [6]])], 1))
        assert state.mode == "recompute" and rel(got, want) < TOL
    finally:
        registry.unregister("test-plain-serving")


def test_serving_details_name_the_path():
    model = make_model("sdpa", True)
    items = left_padded([6, 6], 6)
    with torch.inference_mode():
        model.serve(items)
        assert "last-query:" in model.backend_detail
        state = model.init_serving(items)
        model.serve_step(state, torch.tensor([1, 2]))
        assert model.backend_detail.startswith("kv-cache:")
    model = make_model("elastic-causal", True)
    with torch.inference_mode():
        model.serve(items)
        assert "last-query" in model.backend_detail
        model.serve_step(model.init_serving(items), torch.tensor([1, 2]))
        assert model.backend_detail == "running-state:lda"


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["flash-attn", "xformers", "sdpa-flash", "sdpa-mem-efficient"])
def test_cuda_serving_paths(name):
    cls = registry.get(name)
    why = cls.unavailable_reason("cuda", torch.float16, causal=True, padding=False)
    if why:
        pytest.skip(why)
    cfg = ModelConfig.make(name, 50, 80, d_model=64, heads=2, layers=2, dropout=0.0, causal=True)
    torch.manual_seed(0)
    model = SeqRecModel(cfg).cuda().half().eval()
    items = left_padded([64, 64], 64).cuda()
    with torch.inference_mode():
        want = model(items)[:, -1].float()
        assert rel(model.serve(items).float(), want) < 2e-2
        state = model.init_serving(items[:, :60])
        for i in range(60, 64):
            got, state = model.serve_step(state, items[:, i])
        assert state.mode == "state" and rel(got.float(), want) < 2e-2


@pytest.mark.parametrize("module_path,padded", [("baselines.flash_attn:FlashAttnAttention", True), ("baselines.flash_attn:FlashAttnAttention", False),
                                                ("baselines.xformers:XFormersAttention", False)])  # fmt: skip
def test_cuda_only_backends_serve_through_the_stated_sdpa_fallback(module_path, padded):
    """flash-attn's and xFormers' one-query paths (serve's last layer, serve_step's KV cache) run
    PyTorch SDPA, on any device, so the CPU checks them against the exact oracle; the path is stated."""
    import importlib

    from elastic_bench.attention import masked_softmax_reference

    mod, cls = module_path.split(":")
    attn = getattr(importlib.import_module(mod), cls)(16, 2, causal=True).to(F64).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 16, generator=g, dtype=F64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    if padded:
        mask[1, :4] = False
        mask[2, :8] = False

    def oracle(xx, mm):
        q, k, v = attn.project(xx)
        return attn.out_proj(attn.merge_heads(masked_softmax_reference(q, k, v, mm, True)))[:, -1:]

    with torch.inference_mode():
        y = attn.forward_last(x, mask)
        assert attn.backend_detail == "last-query:sdpa-fallback:cpu"
        assert rel(y, oracle(x, mask)) < TOL
        state = attn.init_state(x[:, :6], mask[:, :6])
        for t in range(6, 9):
            y, state = attn.step(state, x[:, t : t + 1], mask[:, : t + 1] if padded else None)
        assert attn.backend_detail == "kv-cache:sdpa-fallback:cpu"
        assert rel(y, oracle(x, mask)) < TOL
