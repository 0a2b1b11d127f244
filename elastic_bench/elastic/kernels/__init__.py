"""Triton kernels for ELASTIC's LDA layer and IMR, and the dispatch that decides when they run.

One file per kernel (each imports triton, so each is imported lazily, only once a kernel
is about to run: importing elastic_bench never imports triton):

- :mod:`.pack`          non-causal pack (k dispatcher queries over N keys), split-N + combine
- :mod:`.unpack`        non-causal unpack (N queries over k dispatchers), one pass over N
- :mod:`.causal_scan`   the causal LDA scan fused with the folded unpack (``elastic-causal``)
- :mod:`.product_keys`  product-key top-k of IMR in one launch
- :mod:`.preflight`     can Triton build its C launcher and run a kernel here? (checked before GPU runs)

Dispatch (:func:`decide`): ``ELASTIC_BENCH_KERNELS`` = ``auto`` (default) | ``torch`` | ``triton``.

- ``auto``: Triton on CUDA tensors when triton imports and the shapes/dtypes are supported
  (:func:`unsupported`), else PyTorch; the reason is kept (:attr:`Decision.reason`).
- ``torch``: always PyTorch.
- ``triton``: Triton wherever supported, CPU tensors included, which needs the Triton
  interpreter (``TRITON_INTERPRET=1`` set before the kernels are imported; this is how the
  CPU tests run them).  A missing triton, or CPU tensors without the interpreter, is an
  error; an unsupported shape/dtype/dropout still falls back to PyTorch with the reason.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType

import torch

ENV_VAR = "ELASTIC_BENCH_KERNELS"
MODES = ("auto", "torch", "triton")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
MAX_EXPERTS = 128


def kernel_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}; accepted: {', '.join(MODES)}")
    return mode


def interpret_mode() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET`` truthy)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


@functools.lru_cache(maxsize=None)
def triton_status() -> tuple[bool, str]:
    """``(importable, version or reason)``; the import happens here, on first call only."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return False, f"triton unavailable ({type(exc).__name__}: {exc})"
    return True, getattr(triton, "__version__", "?")


def load(name: str) -> ModuleType:
    """Import kernel module ``name``; re-import it if ``TRITON_INTERPRET`` changed since
    its ``@triton.jit`` functions were defined (the flag is read at definition time)."""
    full = f"{__name__}.{name}"
    mod = sys.modules.get(full)
    if mod is None:
        return importlib.import_module(full)
    if getattr(mod, "INTERPRETED", None) != interpret_mode():
        mod = importlib.reload(mod)
    return mod


@dataclass(frozen=True)
class Decision:
    use_triton: bool
    reason: str  # why PyTorch runs ('' when Triton runs)


# per-op limits beyond the common ones (see each kernel module's docstring)
OP_LIMITS = {"causal-scan": {"head_dim": 64, "experts": 64}, "product-keys": {"experts": 128, "side": 4096}}


def unsupported(op: str, tensors: list[torch.Tensor], head_dim: int = 0, experts: int = 0, dropout_p: float = 0.0, side: int = 0) -> str:
    """Why the Triton kernel of ``op`` cannot run on these inputs ('' when it can).
    ``experts`` is k (the product-key top-t for ``product-keys``), ``side`` the sub-key count n."""
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if len(dtypes) != 1:
        return f"mixed dtypes {sorted(str(d) for d in dtypes)}"
    dtype = dtypes.pop()
    if dtype not in DTYPES:
        return f"dtype {dtype} (kernels take float16, bfloat16, float32)"
    if dtype == torch.bfloat16 and interpret_mode():
        return "bfloat16 under the Triton interpreter"
    if len({t.device for t in tensors}) != 1:
        return "tensors on several devices"
    if dropout_p > 0:
        return f"attention dropout p={dropout_p} (kernels have none)"
    if head_dim > MAX_HEAD_DIM:
        return f"head dim {head_dim} > {MAX_HEAD_DIM}"
    if experts > MAX_EXPERTS:
        return f"{experts} dispatchers > {MAX_EXPERTS}"
    lim = OP_LIMITS.get(op, {})
    for what, val in (("head_dim", head_dim), ("experts", experts), ("side", side)):
        if what in lim and val > lim[what]:
            return f"{op}: {what}={val} > {lim[what]}"
    if any(t.numel() == 0 for t in tensors):
        return "empty tensor"
    return ""


def decide(op: str, tensors: list[torch.Tensor], head_dim: int = 0, experts: int = 0, dropout_p: float = 0.0, side: int = 0) -> Decision:
    """Whether kernel ``op`` runs on ``tensors`` (see the module docstring for the rules)."""
    mode = kernel_mode()
    if mode == "torch":
        return Decision(False, f"{ENV_VAR}=torch")
    device = tensors[0].device
    if mode == "auto" and device.type != "cuda":
        return Decision(False, f"auto: tensors on {device.type}")
    ok, info = triton_status()
    if not ok:
        if mode == "triton":
            raise RuntimeError(f"{ENV_VAR}=triton but {info}")
        return Decision(False, info)
    if device.type != "cuda" and not interpret_mode():
        raise RuntimeError(f"{ENV_VAR}=triton with {device.type} tensors needs the Triton interpreter: set TRITON_INTERPRET=1")
    why = unsupported(op, tensors, head_dim, experts, dropout_p, side)
    if why:
        return Decision(False, f"triton unsupported: {why}")
    return Decision(True, "")


# ---- launch helpers shared by the kernel modules (no triton here) ----


def block(x: int, lo: int = 16) -> int:
    """Next power of two ≥ max(x, lo): tile sizes (tl.dot needs every dimension ≥ 16)."""
    return max(lo, 1 << max(0, int(x) - 1).bit_length())


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # interpreter: few programs, it runs them one after another


def splits(n_tiles: int, programs_per_split: int, device: torch.device, split_tiles: int | None = None) -> tuple[int, int]:
    """``(tiles per split, number of splits)``: enough programs to fill the GPU (≈ 2 per SM)."""
    if split_tiles is None:
        want = max(1, -(-2 * num_sms(device) // max(1, programs_per_split)))
        split_tiles = -(-n_tiles // min(want, n_tiles))
    split_tiles = max(1, min(split_tiles, n_tiles))
    return split_tiles, -(-n_tiles // split_tiles)


def tiles(bk: int, bd: int, dtype: torch.dtype, backward: bool = False) -> tuple[int, int]:
    """``(BLOCK_N, num_warps)`` for the pack/unpack kernels, from sm_90 compiles (ptxas
    register/spill reports): wider k×d_h tiles and fp32 (IEEE products on CUDA cores) take
    fewer sequence rows per tile and more warps, so that nothing spills at k, d_h ≤ 64."""
    f32 = dtype == torch.float32
    elems = bk * bd * (2 if f32 else 1) * (2 if backward else 1) * (2 if f32 and backward else 1)
    if elems <= 32 * 32:
        return 64, 4
    if elems <= 64 * 64:
        return 64, 8
    if elems <= 64 * 128:
        return 32, 8
    return 16, 8


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs: exact fp32 products ('ieee'); 16-bit inputs: tf32 where fp32 operands meet."""
    return "ieee" if dtype == torch.float32 else "tf32"
