"""The correctness gate: a backend's module against its own naive reference, before timing.

On small random inputs (2 sequences of ``min(seq_len, 128)`` tokens, the second one
left-padded by a quarter when the backend honours padding masks) the module built for the
cell (dropout off, eval mode) is compared with ``Backend.reference(module, x, mask)`` at the
real positions.  The comparison runs in float64 where the device and backend allow it, else
float32, else the cell's dtype, with METHODOLOGY's tolerances on the relative error
``max|y - y_ref| / max|y_ref|``; when the cell runs in another dtype, the same module is
then checked in that dtype against the precise reference too (the path that is timed,
e.g. a Triton kernel that only serves bf16), with that dtype's tolerance.  A backend that fails is recorded as ``status=incorrect``
and is never timed (so it never gets a speed-up).

Example::

    >>> r = check_backend(registry.get("softmax"), device=torch.device("cpu"), run_dtype="fp32",
    ...                   d_model=64, heads=2, causal=True, options=(), seq_len=256)
    >>> r.ok, r.dtype
    (True, 'fp64')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..attention import DTYPE_NAMES

TOLERANCES = {"fp64": 1e-6, "fp32": 1e-4, "tf32": 1e-3, "bf16": 2e-2, "fp16": 2e-2}
GATE_BATCH = 2
GATE_MAX_LEN = 128


@dataclass(frozen=True)
class GateResult:
    ok: bool
    dtype: str
    max_err: float
    tol: float
    reason: str = ""


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


def gate_inputs(batch: int, n: int, d_model: int, padding: bool, device: torch.device, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, d_model, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    mask = torch.ones(batch, n, dtype=torch.bool)
    if padding and n >= 4:
        mask[-1, : n // 4] = False  # left padding, as the recommender feeds it
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
) -> GateResult:
    """Compare ``backend``'s module with its reference (see the module docstring)."""
    padding = bool(backend.capabilities.padding_mask)
    name = gate_dtype(backend, device, run_dtype, causal, d_model // heads, padding)
    if name is None:
        return GateResult(False, run_dtype, float("nan"), 0.0, "no dtype to check in")
    dtype = DTYPE_NAMES[name]
    tol, tol_name = tolerance(name, device)
    n = min(seq_len, GATE_MAX_LEN)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        module = backend.build(d_model, heads, dropout=0.0, causal=causal, **dict(options))
        module = module.to(device=device, dtype=dtype).eval()
        x, mask = gate_inputs(GATE_BATCH, n, d_model, padding, device, dtype, seed)
        with torch.no_grad():
            y = module(x, mask)
            ref = backend.reference(module, x, mask)
    if y.shape != ref.shape:
        return GateResult(False, name, float("inf"), tol, f"gate: output shape {tuple(y.shape)} != reference {tuple(ref.shape)}")
    y, ref = y[mask].double(), ref[mask].double()
    bad = _judge(y, ref, tol, tol_name)
    if bad:
        return GateResult(False, name, bad[0], tol, bad[1])
    err = _rel_err(y, ref)
    if name == run_dtype or backend.unavailable_reason(device, DTYPE_NAMES[run_dtype], causal=causal, head_dim=d_model // heads, padding=padding):
        return GateResult(True, name, err, tol)
    # the path that is timed: the same module in the run dtype (a fast kernel may only serve
    # that dtype) against the precise reference, with the run dtype's tolerance
    run_tol, run_tol_name = tolerance(run_dtype, device)
    module = module.to(dtype=DTYPE_NAMES[run_dtype])
    with torch.no_grad():
        y_run = module(x.to(DTYPE_NAMES[run_dtype]), mask)[mask].double()
    detail = getattr(module, "backend_detail", "")
    bad = _judge(y_run, ref, run_tol, f"{run_tol_name}, path {detail}")
    if bad:
        return GateResult(False, f"{name}+{run_dtype}", bad[0], run_tol, bad[1])
    return GateResult(True, f"{name}+{run_dtype}", max(err, _rel_err(y_run, ref)), run_tol)


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
