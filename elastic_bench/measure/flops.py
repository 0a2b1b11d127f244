"""FLOPs of one benchmark pass, recorded per row with the method that produced them.

What is counted: the matmul-class FLOPs (2 per multiply-add) that the pass *executes*,
in the convention of :mod:`torch.utils.flop_counter`: matmuls, convolutions and
attention kernels; no element-wise ops.  A causal kernel that skips the masked half of
the score matrix (SDPA's flash, memory-efficient and cuDNN kernels, flash-attn, xFormers)
is counted at its N(N+1)/2 query–key pairs; an implementation that computes the full
N×N scores and then masks them (eager ``softmax``, SDPA's math kernel) at N².

How (one real, untimed call of the pass, which is also the engine's first warm-up):

1. The counter: a dispatch mode with ``torch.utils.flop_counter``'s formulas (like
   ``FlopCounterMode``, without its module tracker) around the pass (forward for
   ``infer``/``fwd``; forward and backward for ``fwd_bwd``/``train_step``; the optimizer
   step has no matmul FLOPs).  Two corrections to torch's formulas: the CPU flash kernel
   is counted with the CUDA flash formulas (torch has none for it), and every SDPA-family
   kernel called with ``is_causal`` (or a causal ``custom_mask_type``) is scaled to its
   causal pairs (torch's formulas ignore causality: "NB: We aren't accounting for causal
   attention here").
2. The paths the counter is blind to: hooks on the innermost modules that report a
   ``backend_detail`` (attention modules, ELASTIC's LDA layers and IMR) record, per
   forward call, the path that ran and the real lengths of its mask.  For each call the
   backend says which phases of that path run kernels the counter cannot see
   (:meth:`Backend.counter_blind <elastic_bench.attention.Backend.counter_blind>`: Triton,
   flash-attn, xFormers), and gives their forward FLOPs
   (:meth:`Backend.attention_flops <elastic_bench.attention.Backend.attention_flops>`);
   a blind backward is 2.5 × the forward (METHODOLOGY.md).  Calls multiply: a model with L
   layers adds L counts per pass.

``flops_method``:

- ``counter``           every op of the pass was visible to the counter;
- ``counter+analytic``  the counter's total plus the analytic counts of the blind paths;
- ``partial``           a blind path without an analytic count, or an op from outside ATen
                        (a custom-op namespace such as ``flash_attn::``) that ran opaquely
                        on an undeclared path: the number is a lower bound.

Example::

    >>> pass_flops(cell, backend_cls, work.run, work.module)
    (1207959552, 'counter')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .cell import BACKWARD_PASSES, Cell

BWD_OVER_FWD = 2.5
_aten = torch.ops.aten
# torch's formulas cover the CUDA flash kernels; the CPU flash kernel has the same FLOPs
# and leading arguments, so it is counted with them (it was counted as zero before)
_ALIASES = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _aten._scaled_dot_product_flash_attention_backward,
}
# attention kernels whose torch formula counts the full score matrix even when causal
_SDPA_DENSE = {  # q, k laid out [B, H, N, d]
    _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_flash_attention_backward,
    _aten._scaled_dot_product_efficient_attention,
    _aten._scaled_dot_product_efficient_attention_backward,
    _aten._scaled_dot_product_cudnn_attention,
    _aten._scaled_dot_product_cudnn_attention_backward,
}
_SDPA_RAW = {  # q, k laid out [B, N, H, d], or packed [total, H, d] / [1, total, H, d] with cumulative lengths
    _aten._flash_attention_forward,
    _aten._flash_attention_backward,
    _aten._efficient_attention_forward,
    _aten._efficient_attention_backward,
}
# namespaces of ops whose work is either counted or none (anything else ran unseen)
_KNOWN_NAMESPACES = {"aten", "prim", "prims", "profiler", "debugprims"}


def causal_pairs(n_q: int, n_k: int, bottom_right: bool = False) -> int:
    """Query–key pairs a causal mask keeps: query i reads keys ≤ i (top-left aligned, as
    SDPA's ``is_causal``) or ≤ i + n_k - n_q (bottom-right).  ``n(n+1)/2`` when square."""
    shift = n_k - n_q if bottom_right else 0
    total = 0
    for i in range(n_q):
        total += min(max(i + 1 + shift, 0), n_k)
    return total


def _causal_fraction(func: Any, packet: Any, args: tuple, kwargs: dict) -> float:
    """Share of the query–key pairs an SDPA-family call computes (1.0 unless causal)."""
    if packet not in _SDPA_DENSE and packet not in _SDPA_RAW:
        return 1.0
    bound = dict(zip((a.name for a in func._schema.arguments), args))
    bound.update(kwargs)
    mask_type = 1 if bound.get("is_causal") else int(bound.get("custom_mask_type") or 0)
    if mask_type == 0:
        return 1.0
    q, k = bound["query"], bound["key"]
    cu_q = bound.get("cum_seq_q", bound.get("cu_seqlens_q"))
    cu_k = bound.get("cum_seq_k", bound.get("cu_seqlens_k"))
    if packet in _SDPA_RAW and isinstance(cu_q, Tensor) and cu_q.numel() > 1:
        lq = cu_q.diff().tolist()
        lk = (cu_k if isinstance(cu_k, Tensor) and cu_k.numel() > 1 else cu_q).diff().tolist()
    else:
        dim = -2 if packet in _SDPA_DENSE else 1
        lq, lk = [q.shape[dim]], [k.shape[dim]]
    full = sum(a * b for a, b in zip(lq, lk))
    kept = sum(causal_pairs(a, b, bottom_right=mask_type == 2) for a, b in zip(lq, lk))
    return kept / full if full else 1.0


class _Counter(TorchDispatchMode):
    """Matmul-class FLOPs of every ATen op, with the formulas of ``torch.utils.flop_counter``
    (causal SDPA kernels at their causal pairs, see the module docstring).

    Like ``FlopCounterMode`` but without its module tracker (whose autograd hooks fail on
    modules that return parameters under ``no_grad``); FLOPs spent while ``inside > 0``
    (set by hooks on chosen modules) are also added to ``in_modules``.  ``foreign`` names
    the ops from outside ATen that ran without a decomposition (work the counter missed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.in_modules = 0
        self.inside = 0
        self.foreign: set[str] = set()

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
            if getattr(func, "namespace", "aten") not in _KNOWN_NAMESPACES:
                self.foreign.add(str(func))
        out = func(*args, **kwargs)
        formula = flop_registry.get(packet)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out) * _causal_fraction(func, packet, args, kwargs))
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


def path_modules(module: nn.Module) -> list[nn.Module]:
    """The innermost submodules (``module`` included) that report a ``backend_detail``: each
    one's forward is one path of the backend (an attention, an LDA layer, IMR retrieval)."""
    has = [m for m in module.modules() if hasattr(m, "backend_detail")]
    return [m for m in has if not any(c is not m and hasattr(c, "backend_detail") for c in m.modules())]


@dataclass
class PathCall:
    """One forward call of a path module: the path that ran and its mask's real lengths."""

    detail: str
    lengths: tuple[int, ...] | None


@dataclass
class _PathRecorder:
    """Forward hooks on :func:`path_modules` that record one :class:`PathCall` per call."""

    modules: list[nn.Module]
    calls: list[PathCall] = field(default_factory=list)
    masks: dict[int, Tensor | None] = field(default_factory=dict)

    def __enter__(self) -> "_PathRecorder":
        self.handles = []
        for m in self.modules:
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()

    def _pre(self, m: nn.Module, args: tuple, kwargs: dict) -> None:
        # every path module's forward is (x, mask, ...): mask bool [B, N], True = real token
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        ok = isinstance(mask, Tensor) and mask.dtype == torch.bool and mask.dim() == 2
        self.masks[id(m)] = mask if ok else None

    def _post(self, m: nn.Module, args: tuple, out: Any) -> None:
        mask = self.masks.pop(id(m), None)
        lengths = tuple(int(x) for x in mask.sum(1).tolist()) if mask is not None else None
        self.calls.append(PathCall(str(getattr(m, "backend_detail", "")), lengths))


def blind_phases(cell: Cell, backend: Any, detail: str) -> set[str]:
    """The phases (``fwd``, ``bwd``) of path ``detail`` that this cell's pass runs unseen by the counter."""
    blind = set(backend.counter_blind(detail))
    if cell.pass_ not in BACKWARD_PASSES:
        blind.discard("bwd")
    return blind


def blind_flops(cell: Cell, backend: Any, call: PathCall, phases: set[str]) -> int | None:
    """FLOPs of ``call``'s ``phases`` from the backend's analytic count (None when it has none)."""
    fwd = backend.attention_flops(
        batch=cell.batch,
        seq_len=cell.seq_len,
        d_model=cell.d_model,
        heads=cell.heads,
        causal=cell.causal,
        options=dict(cell.options),
        detail=call.detail,
        lengths=call.lengths,
    )
    if fwd is None:
        return None
    return int(fwd) * ("fwd" in phases) + int(BWD_OVER_FWD * int(fwd)) * ("bwd" in phases)


def pass_flops(cell: Cell, backend: Any, run: Callable[[], Any], module: Any, forward: Callable[[], Any] | None = None) -> tuple[int, str]:
    """``(FLOPs, flops_method)`` of one call of ``run`` on ``module`` (see the module docstring).

    ``forward`` (a forward-only call) is accepted for the sweep's call signature and not
    needed: the pass itself is counted.
    """
    counter = _Counter()
    with _PathRecorder(path_modules(module)) as paths, counter:
        run()
    total, declared, missing = counter.total, False, False
    for call in paths.calls:
        phases = blind_phases(cell, backend, call.detail)
        if not phases:
            continue
        extra = blind_flops(cell, backend, call, phases)
        if extra is None:
            missing = True
        else:
            total += extra
            declared = True
    if missing or (counter.foreign and not declared):
        return total, "partial"
    return total, "counter+analytic" if declared else "counter"
