"""FLOPs of one benchmark pass, recorded per row with the method that produced them.

- ``counter``: the formulas of :mod:`torch.utils.flop_counter` (a dispatch mode like
  ``FlopCounterMode``, without its module tracker) around one real call of
  the pass at the cell's shape (forward for ``infer``/``fwd``; forward and backward for
  ``fwd_bwd``/``train_step``; the optimizer step has no matmul FLOPs).  It counts matmul-
  class ATen ops (mm, bmm, SDPA...) and sees nothing inside custom kernels.
- ``analytic``: when a backend defines ``flops(batch=, seq_len=, d_model=, heads=, causal=,
  **options)``, returning the forward FLOPs of one attention-module call (an int) or
  ``{"fwd": F, "bwd": B}``, that count is used for the attention (backward = 2.5 × forward
  when not given, the METHODOLOGY convention).  At the model level the rest of the model
  is still counted (``analytic+counter``): forward FLOPs outside attention modules, ×3 for
  passes with a backward (dX and dW of every matmul).

Example::

    >>> pass_flops(cell, backend_cls, workload)
    (1207959552, 'counter')
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..attention import Attention
from .cells import BACKWARD_PASSES, Cell

BWD_OVER_FWD = 2.5
_aten = torch.ops.aten
# torch's formulas cover the CUDA flash kernels; the CPU flash kernel has the same FLOPs
# and leading arguments, so it is counted with them (it was counted as zero before)
_ALIASES = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _aten._scaled_dot_product_flash_attention_backward,
}


class _Counter(TorchDispatchMode):
    """Matmul-class FLOPs of every ATen op, with the formulas of ``torch.utils.flop_counter``.

    Like ``FlopCounterMode`` but without its module tracker (whose autograd hooks fail on
    modules that return parameters under ``no_grad``); FLOPs spent while ``inside > 0``
    (set by hooks on chosen modules) are also added to ``in_modules``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.in_modules = 0
        self.inside = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            return NotImplemented
        packet = _ALIASES.get(func._overloadpacket, func._overloadpacket)
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        formula = flop_registry.get(packet)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            self.total += flops
            if self.inside:
                self.in_modules += flops
        return out


def count(fn: Callable[[], Any], modules: Iterable[nn.Module] = ()) -> tuple[int, int]:
    """(total FLOPs of ``fn()``, the part spent inside ``modules``' forward calls)."""
    counter = _Counter()
    handles = []
    for m in modules:
        handles.append(m.register_forward_pre_hook(lambda *_: setattr(counter, "inside", counter.inside + 1)))
        handles.append(m.register_forward_hook(lambda *_: setattr(counter, "inside", counter.inside - 1)))
    try:
        with counter:
            fn()
    finally:
        for h in handles:
            h.remove()
    return counter.total, counter.in_modules


def analytic_attention(backend: Any, cell: Cell) -> tuple[int, int] | None:
    """(forward, backward) FLOPs of one attention call from the backend's ``flops`` hook, if any."""
    hook = getattr(backend, "flops", None)
    if hook is None:
        return None
    value = hook(batch=cell.batch, seq_len=cell.seq_len, d_model=cell.d_model, heads=cell.heads, causal=cell.causal, **dict(cell.options))
    if value is None:
        return None
    if isinstance(value, dict):
        f = int(value["fwd"])
        return f, int(value.get("bwd", BWD_OVER_FWD * f))
    return int(value), int(BWD_OVER_FWD * int(value))


def pass_flops(cell: Cell, backend: Any, run: Callable[[], Any], module: Any, forward: Callable[[], Any] | None = None) -> tuple[int, str]:
    """FLOPs of one call of ``run`` (see the module docstring); ``forward`` is a forward-only call."""
    backward = cell.pass_ in BACKWARD_PASSES
    attn = analytic_attention(backend, cell)
    if attn is not None and cell.level == "op":
        return attn[0] + (attn[1] if backward else 0), "analytic"
    if attn is not None and forward is not None:
        attn_modules = [m for m in module.modules() if isinstance(m, Attention)]
        if attn_modules:
            total, inside = count(forward, attn_modules)
            rest = total - inside
            per_call = attn[0] + (attn[1] if backward else 0)
            return rest * (3 if backward else 1) + len(attn_modules) * per_call, "analytic+counter"
    total, _ = count(run)
    return total, "counter"
