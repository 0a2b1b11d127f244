"""Conformance of every registered attention backend, whoever wrote it (METHODOLOGY.md,
"Correctness gates"): forward and gradients equal the backend's own naive oracle in
float64, padding invariance, no gradient into padding, causality for causal modes, and a
float32 run within tolerance of the float64 oracle.

Nothing here names a particular backend except the ELASTIC causality declarations: the
cases are generated from :func:`elastic_bench.registry.names`, so a new backend is
covered as soon as it is registered.  A backend that cannot run on this CPU (a CUDA-only
kernel, a missing package) is skipped with its own ``unavailable_reason``.
"""

from __future__ import annotations

import copy
from importlib.metadata import entry_points

import pytest
import torch

from elastic_bench import registry
from elastic_bench.attention import Attention, Backend

F64 = torch.float64
REL_F64 = 1e-8  # fast path vs oracle, both float64
REL_F32 = 1e-4  # METHODOLOGY: fp32 <= 1e-4 relative
REL_EXACT = 1e-12  # things that must not change at all (causality, padding invariance)

# Small values for options a backend may declare, so that tiny inputs still cross chunk
# boundaries, fill memories and use several experts.  Applied only to options the
# backend declares, and only where they shrink an integer default.
TEST_OPTION_CAPS = {"experts": 4, "memory_size": 16, "chunk_size": 4, "proj_len": 8, "interests": 4, "topk": 4}

WIDTHS = [(16, 2), (24, 3)]  # (d_model, heads)
BATCHES = [1, 3]
LENGTHS = [1, 7, 33, 64]
SIDES = ["none", "left", "right"]  # where the padding goes


def modes(cls: type[Backend]) -> list[bool]:
    cap = cls.capabilities
    return [c for c in (False, True) if (cap.causal if c else cap.non_causal)]


CASES = [
    pytest.param(name, causal, id=f"{name}-{'causal' if causal else 'full'}")
    for name in registry.names()
    for causal in modes(registry.get(name))
]
CAUSAL_CASES = [c for c in CASES if c.values[1]]


def options_for_tests(cls: type[Backend]) -> dict:
    options = {}
    for key, cap in TEST_OPTION_CAPS.items():
        default = cls.capabilities.options.get(key)
        if isinstance(default, int) and not isinstance(default, bool) and default > cap:
            options[key] = cap
    return options


def build(name: str, causal: bool, d: int, heads: int, dtype: torch.dtype = F64, dropout: float = 0.0, seed: int = 0):
    """``(Backend, module)`` in eval mode, or skip with the backend's own reason."""
    cls = registry.get(name)
    reason = cls.unavailable_reason("cpu", F64, causal, d // heads, padding=True)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    if dtype != F64:
        reason = cls.unavailable_reason("cpu", dtype, causal, d // heads, padding=True)
        if reason is not None:
            pytest.skip(f"{name}: {reason}")
    torch.manual_seed(seed)
    module = cls.build(d, heads, dropout=dropout, causal=causal, **options_for_tests(cls))
    assert isinstance(module, Attention)
    return cls, module.to(dtype).eval()


def padding_mask(lengths: list[int], n: int, side: str) -> torch.Tensor:
    pos = torch.arange(n)[None, :]
    length = torch.tensor(lengths)[:, None]
    return pos >= n - length if side == "left" else pos < length


def random_lengths(gen: torch.Generator, b: int, n: int, side: str) -> list[int]:
    if side == "none" or n == 1:
        return [n] * b
    lengths = torch.randint(1, n + 1, (b,), generator=gen).tolist()
    lengths[0] = int(torch.randint(1, n, (1,), generator=gen))  # at least one padded row
    return lengths


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str, floor: float = 0.0) -> None:
    """max |actual - expected| <= rel * max(max |expected|, floor)."""
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = max(float(expected.abs().max()) if expected.numel() else 0.0, floor)
    err = float((actual.to(expected.dtype) - expected).abs().max()) if expected.numel() else 0.0
    assert err <= rel * scale or err == 0.0, f"{what}: max abs error {err:.3e} > {rel:g} x scale {scale:.3e}"


def grads(out: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of a loss over real positions only; unused inputs get zeros."""
    loss = (out * weight)[mask].sum()
    gs = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g.to_dense() for t, g in zip(inputs, gs)]


@pytest.mark.parametrize("d,heads", WIDTHS, ids=[f"d{d}h{h}" for d, h in WIDTHS])
@pytest.mark.parametrize("name,causal", CASES)
def test_matches_reference_float64(name: str, causal: bool, d: int, heads: int) -> None:
    cls, module = build(name, causal, d, heads)
    params = [p for p in module.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    for b in BATCHES:
        for n in LENGTHS:
            for side in SIDES if n > 1 else ["none"]:
                where = f"{name} causal={causal} B={b} N={n} padding={side}"
                mask = padding_mask(random_lengths(gen, b, n, side), n, side)
                x = torch.randn(b, n, d, generator=gen, dtype=F64).requires_grad_(True)
                weight = torch.randn(b, n, d, generator=gen, dtype=F64)

                out = module(x, mask)
                assert isinstance(module.backend_detail, str) and module.backend_detail, f"{where}: no backend_detail"
                ref = cls.reference(module, x, mask)
                assert out.shape == (b, n, d), f"{where}: output shape {tuple(out.shape)}"
                assert_close_rel(out[mask], ref[mask], REL_F64, f"{where}: forward")

                inputs = [x, *params]
                g_out, g_ref = grads(out, weight, mask, inputs), grads(ref, weight, mask, inputs)
                floor = 1e-3 * max(float(g.abs().max()) for g in g_ref)
                names = ["x"] + [pn for pn, p in module.named_parameters() if p.requires_grad]
                for pn, go, gr in zip(names, g_out, g_ref):
                    assert_close_rel(go, gr, REL_F64, f"{where}: grad of {pn}", floor=floor)


@pytest.mark.parametrize("name,causal", CASES)
def test_padding_invariance(name: str, causal: bool) -> None:
    """Real outputs do not depend on how many padding tokens surround them, or on which side."""
    d, heads = 16, 2
    cls, module = build(name, causal, d, heads)
    if not cls.capabilities.padding_mask:
        pytest.skip(f"{name} declares no padding-mask support")
    gen = torch.Generator().manual_seed(2)
    lengths = [9, 4, 1, 13]
    tokens = torch.randn(len(lengths), max(lengths), d, generator=gen, dtype=F64)

    def real_outputs(n: int, side: str) -> list[torch.Tensor]:
        mask = padding_mask(lengths, n, side)
        x = torch.randn(len(lengths), n, d, generator=gen, dtype=F64) * 10  # garbage at padding
        for i, length in enumerate(lengths):
            x[i, mask[i]] = tokens[i, :length]
        with torch.no_grad():
            out = module(x, mask)
        return [out[i, mask[i]] for i in range(len(lengths))]

    base = real_outputs(max(lengths), "right")
    for n, side in [(max(lengths), "left"), (max(lengths) + 6, "left"), (max(lengths) + 6, "right"), (40, "left")]:
        for i, (a, e) in enumerate(zip(real_outputs(n, side), base)):
            assert_close_rel(a, e, REL_F64, f"{name} causal={causal}: sequence {i}, padded {side} to N={n}")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name,causal", CASES)
def test_no_gradient_into_padding(name: str, causal: bool, side: str) -> None:
    d, heads = 16, 2
    cls, module = build(name, causal, d, heads)
    if not cls.capabilities.padding_mask:
        pytest.skip(f"{name} declares no padding-mask support")
    gen = torch.Generator().manual_seed(3)
    n = 21
    mask = padding_mask([21, 12, 1, 5], n, side)
    x = (torch.randn(4, n, d, generator=gen, dtype=F64) * 3).requires_grad_(True)
    out = module(x, mask)
    (gx,) = grads(out, torch.randn(4, n, d, generator=gen, dtype=F64), mask, [x])
    leak = float(gx[~mask].abs().max())
    assert leak <= 1e-12, f"{name} causal={causal}: gradient {leak:.3e} reaches padding ({side} padded)"


@pytest.mark.parametrize("side", ["none", "left", "right"])
@pytest.mark.parametrize("name,causal", CAUSAL_CASES)
def test_causality(name: str, causal: bool, side: str) -> None:
    """Perturbing the input after position t leaves every real output at positions <= t unchanged."""
    d, heads = 16, 2
    _, module = build(name, causal, d, heads)
    gen = torch.Generator().manual_seed(4)
    n = 33
    mask = padding_mask([33, 20, 7] if side != "none" else [33, 33, 33], n, side)
    x = torch.randn(3, n, d, generator=gen, dtype=F64)
    with torch.no_grad():
        base = module(x, mask)
        for t in [0, 3, 15, 16, 25, 31]:
            x2 = x.clone()
            x2[:, t + 1 :] += torch.randn(3, n - t - 1, d, generator=gen, dtype=F64) * 5
            out = module(x2, mask)
            keep = mask.clone()
            keep[:, t + 1 :] = False
            assert_close_rel(out[keep], base[keep], REL_EXACT, f"{name}: output at <= {t} changed ({side} padding)",
                             floor=float(base[mask].abs().max()))


def test_elastic_causality_declarations() -> None:
    """Non-causal LDA reads the whole sequence, so ``elastic`` must not claim causality
    (ELASTIC_SPEC.md, "Causality"); ``elastic-causal`` must."""
    names = registry.names()
    if "elastic" not in names and "elastic-causal" not in names:
        pytest.skip("ELASTIC backends are not registered")
    if "elastic" in names:
        assert not registry.get("elastic").capabilities.causal, "elastic must not declare causal support"
    if "elastic-causal" in names:
        assert registry.get("elastic-causal").capabilities.causal, "elastic-causal must declare causal support"


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name,causal", CASES)
def test_float32_close_to_float64_reference(name: str, causal: bool, side: str) -> None:
    d, heads = 16, 2
    cls, module = build(name, causal, d, heads, dtype=torch.float32)
    module = module.double()
    module32 = copy.deepcopy(module).float()
    gen = torch.Generator().manual_seed(5)
    n = 33
    mask = padding_mask([33, 17, 1], n, side)
    x = torch.randn(3, n, d, generator=gen, dtype=F64)
    with torch.no_grad():
        ref = cls.reference(module, x, mask)
        out = module32(x.float(), mask)
    assert out.dtype == torch.float32, f"{name}: float32 module returned {out.dtype}"
    assert_close_rel(out[mask], ref[mask], REL_F32, f"{name} causal={causal}: float32 vs float64 reference")


@pytest.mark.parametrize("name,causal", CASES)
def test_dropout_only_in_training(name: str, causal: bool) -> None:
    """In eval mode a module built with dropout equals the same module built without."""
    d, heads = 16, 2
    _, plain = build(name, causal, d, heads, dropout=0.0)
    _, dropping = build(name, causal, d, heads, dropout=0.5)
    dropping.load_state_dict(plain.state_dict())
    gen = torch.Generator().manual_seed(6)
    mask = padding_mask([10, 6], 10, "left")
    x = torch.randn(2, 10, d, generator=gen, dtype=F64)
    with torch.no_grad():
        assert_close_rel(dropping(x, mask)[mask], plain(x, mask)[mask], REL_EXACT, f"{name}: dropout active in eval mode")


def _entry_points() -> list:
    return sorted(entry_points(group=registry.GROUP), key=lambda ep: ep.name)


@pytest.mark.parametrize("ep", _entry_points(), ids=lambda ep: ep.name)
def test_entry_point_loads(ep) -> None:
    """Every declared backend imports without its optional packages and names itself correctly.

    A module that does not exist yet skips (work in progress); any other import error fails.
    """
    errors = registry.load_errors()
    if ep.name in errors:
        if f"No module named '{ep.module}'" in errors[ep.name]:
            pytest.skip(f"{ep.value}: not written yet")
        pytest.fail(f"backend {ep.name!r} failed to load: {errors[ep.name]}")
    cls = registry.get(ep.name)
    assert cls.name == ep.name, f"entry point {ep.name!r} loads a backend named {cls.name!r}"
    assert issubclass(cls.module, Attention)
    assert cls.summary, f"{ep.name}: empty summary"
