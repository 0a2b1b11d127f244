"""The correctness gate: the path a cell times, against the backend's naive reference, before timing.

**What is gated.**  The backend's attention module, called exactly as the model level calls it
in every block (``module(LN(h) [B, N, D], mask)``), in the cell's configuration:

- causality, and padding: ``"full"`` gates unpadded rows (the fast paths that need no mask),
  ``"random"`` gates left-padded rows (:func:`gate_inputs`);
- precision regime: weights in the cell's dtype, or fp32 weights under autocast in the cell's
  16-bit dtype (``autocast=True``: what the autograd passes time); the input then arrives in
  the dtype the level gives it: the cell's at the op level, what ``LayerNorm`` returns under
  autocast (fp32) at the model level;
- grad mode and train/eval mode of the pass (``grad=True``: autograd on and train mode, as
  ``fwd``/``fwd_bwd``/``train_step`` run; else inference mode and eval);
- dropout: a training cell with dropout takes its backend's dropout path (kernels differ:
  CPU SDPA leaves flash for math, ELASTIC's Triton kernels fall back to PyTorch), so the gate
  builds the module with dropout :data:`GATE_DROPOUT` = 1e-12: the same path, while the
  chance that anything is dropped at all is ~1e-6, so outputs stay comparable with the
  dropout-free reference;
- masks prepared once (:func:`~elastic_bench.attention.prepare_masks`), as the engine does
  before it times;
- at ``N = min(seq_len, GATE_LEN)`` with ``GATE_LEN = 256``: at least two tiles of every
  kernel (128-wide flash-class tiles; ELASTIC's ≤ 64-row tiles and 32-token chunks), while
  two sequences of 256 tokens keep the gate cheap on a CPU.

The op level times this module alone; the model level stacks the same module in every block
(ELASTIC's encoder: the same LDA layer and IMR), so one gate serves both levels.  The gate
returns the ``backend_detail`` of the gated call (:attr:`GateResult.detail`); the engine
checks that it is the path it then times, and records a mismatch as ``incorrect`` with the
two paths in the reason.

**Two comparisons**, each by the relative error ``max|y - y_ref| / max|y_ref|`` over the real
positions, with METHODOLOGY's tolerances:

1. the mathematics: the module in the most precise dtype it runs here (fp64, else fp32)
   against its reference in that dtype; skipped when that dtype is the timed one;
2. the timed path: the module as timed against the float64 reference **of the same rounded
   parameters and inputs** (a float64 copy of the module after its cast, the inputs after
   theirs), with the run dtype's tolerance.  The error left is the path's arithmetic, not
   the rounding of its inputs, which the fp64 reference would otherwise not see.

A backend that fails is recorded as ``status=incorrect`` and is never timed (so it never
gets a speed-up).  One that cannot run the cell's configuration here at all is
``skipped:<reason>`` (:attr:`GateResult.skipped`), never ``incorrect``.

Example::

    >>> r = check_backend(registry.get("softmax"), device=torch.device("cpu"), run_dtype="fp32",
    ...                   d_model=64, heads=2, causal=True, options=(), seq_len=256)
    >>> r.ok, r.dtype, r.n
    (True, 'fp64+fp32', 256)
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..attention import DTYPE_NAMES, prepare_masks

TOLERANCES = {"fp64": 1e-6, "fp32": 1e-4, "tf32": 1e-3, "bf16": 2e-2, "fp16": 2e-2}
GATE_BATCH = 2
GATE_LEN = 256  # >= 2 tiles of every kernel: 2 x 128 (flash-class), 4 x 64 (ELASTIC)
GATE_DROPOUT = 1e-12  # takes a backend's dropout path, drops nothing in practice


@dataclass(frozen=True)
class GateResult:
    ok: bool
    dtype: str  # e.g. "fp64+bf16": the precise check, then the timed dtype
    max_err: float
    tol: float
    reason: str = ""
    detail: str = ""  # backend_detail of the gated call of the timed path
    skipped: bool = False  # the gate could not run here: the cell is skipped, not incorrect
    n: int = 0  # the gated sequence length


def gate_len(seq_len: int) -> int:
    """The gated sequence length of a cell of ``seq_len`` tokens."""
    return max(1, min(seq_len, GATE_LEN))


def gate_dtype(backend: Any, device: torch.device, run_dtype: str, causal: bool, head_dim: int, padding: bool) -> str | None:
    """The most precise dtype the backend runs on this device (fp64, then fp32, then the cell's)."""
    for name in dict.fromkeys(("fp64", "fp32", run_dtype)):
        if backend.unavailable_reason(device, DTYPE_NAMES[name], causal=causal, head_dim=head_dim, padding=padding) is None:
            return name
    return None


def tolerance(dtype: str, device: torch.device) -> tuple[float, str]:
    if dtype == "fp32" and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return TOLERANCES["tf32"], "tf32"
    return TOLERANCES[dtype], dtype


def gate_lengths(batch: int, n: int, padding: bool) -> list[int]:
    """Real lengths of the gate's rows: all ``n``, or (padded) ``n - n/4``, ``n/3``, ``n/2``, ... (≥ 1 each)."""
    if not padding or n < 2:
        return [n] * batch
    return [max(1, min(n - 1, n - n // 4 if i == 0 else n // (i + 2))) for i in range(batch)]


def gate_inputs(batch: int, n: int, d_model: int, padding: bool, device: torch.device, dtype: torch.dtype, seed: int):
    """``(x [B, n, D], mask [B, n])``: standard normal x (as ``LN(h)`` is), left-padded rows when
    ``padding`` (every row then has padding, as the ``random`` workload's rows almost surely do)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, d_model, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    lens = torch.tensor(gate_lengths(batch, n, padding))
    mask = torch.arange(n)[None, :] >= (n - lens)[:, None]  # left padding, as the recommender feeds it
    return x, mask.to(device)


def check_backend(
    backend: Any,
    *,
    device: torch.device,
    run_dtype: str,
    d_model: int,
    heads: int,
    causal: bool,
    options: tuple[tuple[str, Any], ...],
    seq_len: int,
    seed: int = 0,
    padding: str = "full",
    grad: bool = False,
    autocast: bool = False,
    level: str = "op",
    dropout: float = 0.0,
) -> GateResult:
    """Compare ``backend``'s module, as the cell times it, with its reference (see the module docstring).

    ``padding``: the cell's (``"full"`` or ``"random"``); ``grad``: an autograd pass (autograd on,
    train mode); ``autocast``: fp32 weights under autocast in ``run_dtype``; ``level``: ``op`` or
    ``model`` (only the input's dtype under autocast differs); ``dropout``: the cell's (with
    ``grad``, the dropout path is gated at :data:`GATE_DROPOUT`)."""
    padded = padding != "full"
    head_dim = d_model // heads
    run = DTYPE_NAMES[run_dtype]
    why = backend.unavailable_reason(device, run, causal=causal, head_dim=head_dim, padding=padded)
    if why:
        return GateResult(False, run_dtype, float("nan"), 0.0, f"cannot gate: {why}", skipped=True)
    n = gate_len(seq_len)
    precise = gate_dtype(backend, device, run_dtype, causal, head_dim, padded)
    timed_name = f"{run_dtype}-autocast" if autocast else run_dtype
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        p = GATE_DROPOUT if grad and dropout > 0 else 0.0
        module = backend.build(d_model, heads, dropout=p, causal=causal, **dict(options)).to(device).eval()
        x, mask = gate_inputs(GATE_BATCH, n, d_model, padded, device, torch.float64, seed)
        prepare_masks(module, mask)
        errs: list[float] = []
        name = timed_name
        if precise is not None and precise != run_dtype:
            # 1. the mathematics, in the most precise dtype
            name = f"{precise}+{timed_name}"
            dt = DTYPE_NAMES[precise]
            module = module.to(dtype=dt)
            with torch.no_grad():
                y = module(x.to(dt), mask)
                ref = backend.reference(module, x.to(dt), mask)
            if y.shape != ref.shape:
                return GateResult(False, precise, float("inf"), 0.0, f"gate: output shape {tuple(y.shape)} != reference {tuple(ref.shape)}", n=n)
            tol, tol_name = tolerance(precise, device)
            bad = _judge(y[mask].double(), ref[mask].double(), tol, tol_name)
            if bad:
                return GateResult(False, precise, bad[0], tol, bad[1], n=n)
            errs.append(_rel_err(y[mask].double(), ref[mask].double()))
        # 2. the timed path, against the float64 reference of its own rounded weights and inputs
        module = module.to(dtype=torch.float32 if autocast else run)
        x_run = x.to(block_input_dtype(run, device) if autocast and level == "model" else run)
        y_run, detail = _timed_call(module, x_run, mask, grad, run if autocast else None)
        ref_module = copy.deepcopy(module).to(torch.float64).eval()
        with torch.no_grad():
            ref = backend.reference(ref_module, x_run.double(), mask)
    if y_run.shape != ref.shape:
        return GateResult(False, name, float("inf"), 0.0, f"gate: output shape {tuple(y_run.shape)} != reference {tuple(ref.shape)}", detail=detail, n=n)
    tol, tol_name = tolerance(run_dtype, device)
    y_run, ref = y_run[mask].double(), ref[mask].double()
    bad = _judge(y_run, ref, tol, f"{tol_name}{', autocast' if autocast else ''}, path {detail}")
    if bad:
        return GateResult(False, name, bad[0], tol, bad[1], detail=detail, n=n)
    return GateResult(True, name, max(errs + [_rel_err(y_run, ref)]), tol, detail=detail, n=n)


def block_input_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype of ``LN(h)`` for fp32 ``h`` under autocast in ``dtype``: what a block's attention receives."""
    with torch.autocast(device.type, dtype=dtype):
        return torch.nn.functional.layer_norm(torch.zeros(1, 8, device=device), (8,)).dtype


def _timed_call(module: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, grad: bool, autocast: torch.dtype | None) -> tuple[torch.Tensor, str]:
    """``module(x, mask)`` in the pass's grad and train mode (and autocast); (output, backend_detail)."""
    module.train(grad)
    x_in = x.detach().clone().requires_grad_(grad)
    mode = torch.enable_grad() if grad else torch.inference_mode()
    cast = torch.autocast(x.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with mode, cast:
        y = module(x_in, mask)
    module.eval()
    return y.detach().clone(), str(getattr(module, "backend_detail", ""))


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def _judge(y: torch.Tensor, ref: torch.Tensor, tol: float, tol_name: str) -> tuple[float, str] | None:
    """``None`` when ``y`` matches ``ref`` within ``tol``, else (error, reason)."""
    if not torch.isfinite(y).all():
        return float("inf"), f"gate: non-finite output at real positions ({tol_name})"
    err = _rel_err(y, ref)
    if err > tol:
        return err, f"gate: relative error {err:.2e} > {tol:.0e} ({tol_name}) vs the reference"
    return None


# ----------------------------------------------------------------------------- serving passes

SERVE_GATE_STEPS = 2  # serve_step: appended items checked against a fresh full forward
SERVE_GATE_ITEMS = 64  # catalogue of the gate's small model


def serving_gate_items(n: int, padded: bool, device: torch.device, seed: int, extra: int = 0) -> torch.Tensor:
    """Left-padded item ids ``[B, n + extra]`` of the serving gate: :func:`gate_lengths` rows (plus,
    when ``padded``, an all-padding history row), the last ``extra`` columns real (appended items)."""
    g = torch.Generator().manual_seed(seed)
    lens = gate_lengths(GATE_BATCH, n, padded) + ([0] if padded else [])
    mask = torch.arange(n)[None, :] >= (n - torch.tensor(lens))[:, None]
    hist = torch.randint(1, SERVE_GATE_ITEMS + 1, (len(lens), n), generator=g) * mask
    new = torch.randint(1, SERVE_GATE_ITEMS + 1, (len(lens), extra), generator=g)
    return torch.cat([hist, new], 1).to(device)


def check_serving(
    backend_name: str,
    *,
    device: torch.device,
    run_dtype: str,
    precise: str | None,
    pass_: str,
    d_model: int,
    heads: int,
    layers: int,
    causal: bool,
    options: tuple[tuple[str, Any], ...],
    seq_len: int,
    seed: int = 0,
    padding: str = "full",
) -> GateResult:
    """The serving path a ``serve`` / ``serve_step`` cell times, against the full forward.

    A small recommender (the cell's width, heads, layers, causality and options; a
    :data:`SERVE_GATE_ITEMS`-item catalogue) at ``n = gate_len(seq_len)``: ``serve(items)`` must
    equal ``model(items)[:, -1]``, and ``serve_step`` after :data:`SERVE_GATE_STEPS` appended items
    (from the state of the ``n``-item history) must equal the full forward's last position on the
    longer history.  First in ``precise`` (fp64 where the backend runs it), then in the run dtype
    against the float64 full forward of the same rounded weights (the mechanism's full forward is
    checked against its naive oracle by :func:`check_backend`).  ``padding="random"`` gates
    left-padded rows and an all-padding history row; ``"full"`` the unpadded path."""
    from ..recommender import ModelConfig, SeqRecModel

    padded = padding != "full"
    n = gate_len(seq_len)
    steps = SERVE_GATE_STEPS if pass_ == "serve_step" else 0
    items = serving_gate_items(n, padded, device, seed, steps)
    cfg = ModelConfig.make(backend_name, SERVE_GATE_ITEMS, n + steps, options=dict(options), d_model=d_model, heads=heads, layers=layers,
                           dropout=0.0, causal=causal)  # fmt: skip
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = SeqRecModel(cfg).to(device).eval()

    def served(m: torch.nn.Module) -> tuple[torch.Tensor, str]:
        with torch.inference_mode():
            if not steps:
                y = m.serve(items)
                return y, str(m.backend_detail)
            state = m.init_serving(items[:, :n])
            for i in range(steps):
                y, state = m.serve_step(state, items[:, n + i])
            detail = str(m.backend_detail)
            return y, (detail if state.mode == "state" else f"recompute:{detail}")

    def full(m: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return m(items)[:, -1]

    errs: list[float] = []
    name = run_dtype
    if precise is not None and precise != run_dtype:
        name = f"{precise}+{run_dtype}"
        model = model.to(DTYPE_NAMES[precise])
        y, _ = served(model)
        tol, tol_name = tolerance(precise, device)
        bad = _judge(y.double(), full(model).double(), tol, f"{tol_name}, {pass_} vs the full forward")
        if bad:
            return GateResult(False, precise, bad[0], tol, bad[1], n=n)
        errs.append(_rel_err(y.double(), full(model).double()))
    model = model.to(DTYPE_NAMES[run_dtype])
    y, detail = served(model)
    ref = full(copy.deepcopy(model).to(torch.float64))
    tol, tol_name = tolerance(run_dtype, device)
    bad = _judge(y.double(), ref, tol, f"{tol_name}, {pass_} vs the float64 full forward, path {detail}")
    if bad:
        return GateResult(False, name, bad[0], tol, bad[1], detail=detail, n=n)
    return GateResult(True, name, max(errs + [_rel_err(y.double(), ref)]), tol, detail=detail, n=n)
