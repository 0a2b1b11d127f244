"""The one attention interface every mechanism in elastic-bench implements.

A *backend* is a small class that describes a mechanism (what it supports, why it cannot
run here) and builds its ``nn.Module``.  Every module is built from the same arguments
and has the same forward signature::

    module = Backend.build(d_model=64, heads=2, dropout=0.0, causal=False, **options)
    y = module(x, mask)          # x: [B, N, D]; mask: bool [B, N], True = real token
                                 # y: [B, N, D]; values at padding positions are unspecified

and a naive oracle beside the fast path, used by the tests and the benchmark's
correctness gate::

    y_ref = Backend.reference(module, x, mask)   # same parameters, plain PyTorch

Backends are found through the ``elastic_bench.backends`` entry-point group (see
:mod:`elastic_bench.registry`), so a user's own package adds one the same way the
built-in baselines do.

Example::

    >>> from elastic_bench.attention import Backend, Capabilities
    >>> class MyBackend(Backend):
    ...     name = "mine"
    ...     summary = "my mechanism"
    ...     capabilities = Capabilities(causal=False)
    ...     module = MyAttentionModule          # an Attention subclass
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

ALL_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"fp16"`` (the spelling used in the CLI and the CSV)."""
    for name, dt in DTYPE_NAMES.items():
        if dt == dtype:
            return name
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do.  Anything outside it is refused with a reason.

    ``options`` lists the backend's own constructor options with their defaults; the CLI
    and the sweep only pass an option to a backend that declares it.
    """

    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = ALL_DTYPES
    causal: bool = True  # can run with causal=True
    non_causal: bool = True  # can run with causal=False
    padding_mask: bool = True  # honours the key padding mask
    head_dims: tuple[int, ...] | None = None  # allowed head dims (None = any)
    max_head_dim: int | None = None
    requires: tuple[str, ...] = ()  # importable modules this backend needs
    options: Mapping[str, Any] = field(default_factory=dict)


class Attention(nn.Module):
    """Base class of every attention module: ``forward(x [B,N,D], mask bool[B,N]) -> [B,N,D]``.

    ``backend_detail`` says which implementation actually ran on the last call (for example
    which SDPA kernel PyTorch chose); it is written to every benchmark row.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model = d_model
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout_p = float(dropout)
        self.causal = bool(causal)
        self.backend_detail = type(self).__name__

    accepts_kv_input = False  # True when forward(x, mask, kv=...) takes keys/values from ``kv``

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- host-side decisions about the mask, made once, outside any timed call

    def mask_plan(self, mask: Tensor) -> Any:
        """What this module derives from a mask on the host before it can launch its kernels.

        Default: whether anything is padded (``not mask.all()``: one device-to-host sync on
        CUDA).  A backend that needs more (real lengths, packing indices) overrides it."""
        return not bool(mask.all())

    def prepare(self, mask: Tensor | None) -> None:
        """Make :meth:`mask_plan`'s decisions for ``mask`` now, so that later calls whose mask has
        the same shape and device reuse them without reading the mask on the host (no sync
        inside a timed call).  The caller promises that those masks equal ``mask`` (a benchmark
        replays one batch); ``prepare(None)`` forgets the plan."""
        self._mask_plan = None if mask is None else (tuple(mask.shape), mask.device, self.mask_plan(mask))

    def plan_for(self, mask: Tensor) -> Any:
        """The prepared plan when ``mask`` has its shape and device, else :meth:`mask_plan` now."""
        prepared = self.__dict__.get("_mask_plan")
        if prepared is not None and prepared[0] == tuple(mask.shape) and prepared[1] == mask.device:
            return prepared[2]
        return self.mask_plan(mask)

    # ---- serving (README "Serving"): the last position only, and one appended interaction

    def forward_last(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Tensor:
        """``[B, 1, D]``: the output at the last index only (what a server needs from the last layer).

        Generic fallback, so that any third-party backend serves: the full forward, then its last
        position (``backend_detail`` gains the prefix ``full-then-last:``).  A backend whose
        mathematics lets one query be computed alone overrides it."""
        y = self(x, mask, kv=kv) if kv is not None and self.accepts_kv_input else self(x, mask)
        self.backend_detail = serving_path("full-then-last:", self.backend_detail)
        return y[:, -1:]

    def init_state(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Any | None:
        """The per-user state from which :meth:`step` appends one position, built from the whole
        history's block input ``x [B, N, D]`` (``kv``: the keys/values input of a ``sasrec`` block).
        ``None`` (the default): no incremental path; the recommender then recomputes the history.
        Only a causal module may return a state (a non-causal output changes with every new item)."""
        return None

    def step(self, state: Any, x_new: Tensor, mask: Tensor | None, kv_new: Tensor | None = None) -> tuple[Tensor, Any]:
        """``(y [B, 1, D], new state)``: the output of one appended (real) position ``x_new [B, 1, D]``.
        ``mask [B, n + 1]``: which of the state's keys are real, the new one included (None: all).
        Must not modify what ``state`` reads, except storage past its length (a KV cache's spare
        columns), so that the same step repeated from the same state gives the same result."""
        raise NotImplementedError(f"{type(self).__name__} has no incremental step")

    def state_tensors(self, state: Any) -> list[Tensor]:
        """The tensors of ``state`` that hold per-user data, cut to their used length (for the
        state's size in bytes).  Default: every tensor in ``state`` (a tensor, tuple, list or dict)."""
        return list(tensors_in(state))


def tensors_in(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from tensors_in(v)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from tensors_in(getattr(obj, name))


SERVING_PREFIXES = ("full-then-last:", "last-query:", "kv-cache:")


def serving_path(prefix: str, detail: str) -> str:
    """``prefix + detail`` with any serving prefix already on ``detail`` removed first (a module whose
    forward does not reset ``backend_detail`` on every call must not grow it call after call)."""
    detail = str(detail)
    while detail.startswith(SERVING_PREFIXES):
        detail = detail.split(":", 1)[1]
    return prefix + detail


def key_mask_or_all(mask: Tensor) -> Tensor:
    """``mask`` with every key allowed in rows that have no real key (their output is unspecified,
    but must stay finite: the recommender multiplies it by 0)."""
    return mask | ~mask.any(dim=1, keepdim=True)


def sdpa_last_query(module: "Attention", q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """One query per sequence over ``k, v`` through ``F.scaled_dot_product_attention`` (the serving
    fallback of backends whose own kernel has no one-query path here); sets ``module.backend_detail``
    to ``sdpa-fallback:<device>``."""
    import torch.nn.functional as F

    attn_mask = None if mask is None else key_mask_or_all(mask)[:, None, None, :]
    module.backend_detail = f"sdpa-fallback:{q.device.type}"
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def prepare_masks(model: nn.Module, mask: Tensor | None) -> int:
    """:meth:`Attention.prepare` on every attention module inside ``model`` (all of them see the
    same key-padding mask: the recommender passes its input mask to every block); returns how
    many were prepared."""
    mods = [m for m in model.modules() if isinstance(m, Attention)]
    for m in mods:
        m.prepare(mask)
    return len(mods)


def attend_last_via_attend(self: "QKVAttention", q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """An ``attend_last`` for a mechanism whose :meth:`~QKVAttention.attend` takes one query
    against all the keys as it is (a non-causal summary of the keys: Linformer, LinRec,
    LightSANs; ``serve_step`` recomputes for them): ``attend`` itself, with an all-real mask
    when none is given.  Assign it in the class body: ``attend_last = attend_last_via_attend``."""
    if mask is None:
        mask = torch.ones(k.shape[0], k.shape[2], dtype=torch.bool, device=k.device)
    return self.attend(q, k, v, mask)


class QKVAttention(Attention):
    """An attention with the usual query/key/value and output projections.

    Subclasses implement :meth:`attend` (the fast path) and :meth:`attend_reference`
    (the naive oracle) on per-head tensors ``q, k, v: [B, H, N, d_h]``.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__(d_model, heads, dropout, causal)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t: Tensor) -> Tensor:
        b, h, n, dh = t.shape
        return t.transpose(1, 2).reshape(b, n, h * dh)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    accepts_kv_input = True  # forward(x, mask, kv=...) reads keys and values from ``kv``

    def forward(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Tensor:
        """Self-attention over ``x``; with ``kv`` given, queries from ``x`` and keys/values from ``kv``
        (same positions and mask: SASRec's block normalises only the queries)."""
        if kv is None:
            q, k, v = self.project(x)
        else:
            q, k, v = self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(kv)), self.split_heads(self.v_proj(kv))
        return self.out_proj(self.merge_heads(self.attend(q, k, v, mask)))

    def reference(self, x: Tensor, mask: Tensor) -> Tensor:
        """The naive oracle: same parameters, plain PyTorch, no dropout."""
        q, k, v = self.project(x)
        return self.out_proj(self.merge_heads(self.attend_reference(q, k, v, mask)))

    # ---- serving: one query, and (opt-in) a KV cache

    kv_cache: ClassVar[bool] = False  # exact softmax attention: a causal module's state is its keys and values

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor | None:
        """One query per sequence ``q [B, H, 1, d_h]`` over the keys ``k, v [B, H, n, d_h]`` (all of
        them are at or before the query, so causality changes nothing); ``mask [B, n]`` (None: all
        real).  ``None`` (the default): not implemented, :meth:`forward_last` falls back to the full
        forward."""
        return None

    def forward_last(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Tensor:
        """The last position's query only, over every key: O(N·d) instead of the full forward."""
        if type(self).attend_last is QKVAttention.attend_last:
            return super().forward_last(x, mask, kv)
        src = x if kv is None else kv
        q = self.split_heads(self.q_proj(x[:, -1:]))
        k, v = self.split_heads(self.k_proj(src)), self.split_heads(self.v_proj(src))
        out = self.attend_last(q, k, v, mask if self.plan_for(mask) else None)
        self.backend_detail = serving_path("last-query:", self.backend_detail)
        return self.out_proj(self.merge_heads(out))

    def init_state(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Any | None:
        """A causal exact attention's state: its keys and values (:class:`KVCache`)."""
        if not (self.kv_cache and self.causal) or type(self).attend_last is QKVAttention.attend_last:
            return None
        src = x if kv is None else kv
        return KVCache.build(self.split_heads(self.k_proj(src)), self.split_heads(self.v_proj(src)))

    def step(self, state: Any, x_new: Tensor, mask: Tensor | None, kv_new: Tensor | None = None) -> tuple[Tensor, Any]:
        if not isinstance(state, KVCache):
            return super().step(state, x_new, mask, kv_new)
        src = x_new if kv_new is None else kv_new
        cache = state.append(self.split_heads(self.k_proj(src)), self.split_heads(self.v_proj(src)))
        out = self.attend_last(self.split_heads(self.q_proj(x_new)), cache.keys, cache.values, mask)
        self.backend_detail = serving_path("kv-cache:", self.backend_detail)
        return self.out_proj(self.merge_heads(out)), cache

    def state_tensors(self, state: Any) -> list[Tensor]:
        return [state.keys, state.values] if isinstance(state, KVCache) else super().state_tensors(state)


@dataclass(frozen=True)
class KVCache:
    """Keys and values of one layer, ``[B, H, capacity, d_h]`` buffers of which the first ``n``
    columns are in use (left-padded history, then the appended items).

    :meth:`append` writes column ``n`` in place and returns a cache of length ``n + 1`` over the
    same buffers (growing them by doubling when full, O(1) amortised): the cache it was called on
    still reads its own ``n`` columns, and repeating the append from it rewrites the same column
    (the benchmark times one append from one state many times).  Two different appends from one
    cache share that column: the later one wins.
    """

    k: Tensor
    v: Tensor
    n: int

    @staticmethod
    def build(k: Tensor, v: Tensor, spare: int = 1) -> "KVCache":
        b, h, n, dh = k.shape
        kb, vb = k.new_empty(b, h, n + spare, dh), v.new_empty(b, h, n + spare, v.shape[-1])
        kb[:, :, :n], vb[:, :, :n] = k, v
        return KVCache(kb, vb, n)

    @property
    def keys(self) -> Tensor:
        return self.k[:, :, : self.n]

    @property
    def values(self) -> Tensor:
        return self.v[:, :, : self.n]

    def append(self, k_new: Tensor, v_new: Tensor) -> "KVCache":
        kb, vb = self.k, self.v
        if self.n >= kb.shape[2]:  # full: a buffer twice as long (the old cache keeps the old one)
            cap = max(2 * kb.shape[2], self.n + 1)
            kb2, vb2 = kb.new_empty(*kb.shape[:2], cap, kb.shape[3]), vb.new_empty(*vb.shape[:2], cap, vb.shape[3])
            kb2[:, :, : self.n], vb2[:, :, : self.n] = self.keys, self.values
            kb, vb = kb2, vb2
        kb[:, :, self.n : self.n + 1] = k_new
        vb[:, :, self.n : self.n + 1] = v_new
        return KVCache(kb, vb, self.n + 1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def masked_softmax_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, causal: bool) -> Tensor:
    """Plain softmax attention, one sequence at a time over its real tokens only.

    Used as the oracle of every exact-attention backend: it never sees a padding key, so
    it is independent of how a fast path masks.  Outputs at padding positions are zero.
    """
    b, h, n, dh = q.shape
    out = torch.zeros_like(q)
    for i in range(b):
        idx = mask[i].nonzero().flatten()
        if idx.numel() == 0:
            continue
        qi, ki, vi = q[i][:, idx], k[i][:, idx], v[i][:, idx]
        s = qi @ ki.transpose(-1, -2) / math.sqrt(dh)
        if causal:
            m = idx.numel()
            s = s.masked_fill(torch.ones(m, m, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        out[i][:, idx] = torch.softmax(s, dim=-1) @ vi
    return out


def missing_modules(names: tuple[str, ...]) -> list[str]:
    return [m for m in names if importlib.util.find_spec(m) is None]


class Backend:
    """Describes one attention mechanism and builds its module.  Subclass and register."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    module: ClassVar[type[Attention]]

    @classmethod
    def unavailable_reason(
        cls,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        causal: bool | None = None,
        head_dim: int | None = None,
        padding: bool = False,
    ) -> str | None:
        """``None`` when the backend can run with these settings here, else a one-line why."""
        cap = cls.capabilities
        missing = missing_modules(cap.requires)
        if missing:
            return f"package not installed: {', '.join(missing)}"
        dev = torch.device(device).type
        if dev not in cap.devices:
            return f"needs {' or '.join(cap.devices)}, not {dev}"
        if dev == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        if dtype not in cap.dtypes:
            return f"dtype {dtype_name(dtype)} not supported (supports {', '.join(dtype_name(d) for d in cap.dtypes)})"
        if causal is True and not cap.causal:
            return "no causal variant"
        if causal is False and not cap.non_causal:
            return "causal only"
        if padding and not cap.padding_mask:
            return "no padding-mask support"
        if head_dim is not None:
            if cap.head_dims is not None and head_dim not in cap.head_dims:
                return f"head dim {head_dim} not supported (supports {cap.head_dims})"
            if cap.max_head_dim is not None and head_dim > cap.max_head_dim:
                return f"head dim {head_dim} > {cap.max_head_dim}"
        return cls.extra_unavailable_reason(dev, dtype)

    @classmethod
    def extra_unavailable_reason(cls, device: str, dtype: torch.dtype) -> str | None:
        """Hook for checks beyond the declared capabilities (e.g. compute capability)."""
        return None

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The backend's options: declared defaults overridden by ``options``; unknown ones refused."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.capabilities.options))
        if unknown:
            known = ", ".join(sorted(cls.capabilities.options)) or "none"
            raise ValueError(f"backend {cls.name!r} has no option {', '.join(unknown)} (its options: {known})")
        return {**cls.capabilities.options, **options}

    @classmethod
    def build(cls, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, **options: Any) -> Attention:
        if causal and not cls.capabilities.causal:
            raise ValueError(f"backend {cls.name!r} has no causal variant")
        if not causal and not cls.capabilities.non_causal:
            raise ValueError(f"backend {cls.name!r} is causal only")
        return cls.module(d_model, heads, dropout=dropout, causal=causal, **cls.resolve_options(options))

    @classmethod
    def reference(cls, module: Attention, x: Tensor, mask: Tensor) -> Tensor:
        """Naive oracle with ``module``'s parameters (dropout off); defaults to ``module.reference``."""
        return module.reference(x, mask)

    @classmethod
    def build_encoder(cls, **kwargs: Any) -> nn.Module | None:
        """A backend may supply its own L-layer encoder (ELASTIC carries dispatchers across
        layers); ``None`` means the recommender stacks standard pre-LN blocks of ``module``."""
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the packages this backend relies on (for the CSV)."""
        return {}

    @classmethod
    def counter_blind(cls, detail: str) -> tuple[str, ...]:
        """The phases (``"fwd"``, ``"bwd"``) of the path named ``detail`` (a module's
        ``backend_detail``) whose FLOPs ``torch.utils.flop_counter`` cannot see: kernels that
        are not ATen ops (Triton, flash-attn, xFormers).  ``()``: plain PyTorch, all visible.

        Default: a ``triton:...`` path is blind in both phases (the naming convention of
        ``backend_detail``); a backend whose Triton backward runs in PyTorch says so."""
        return ("fwd", "bwd") if detail.startswith("triton:") else ()

    @classmethod
    def attention_flops(
        cls,
        *,
        batch: int,
        seq_len: int,
        d_model: int,
        heads: int,
        causal: bool,
        options: Mapping[str, Any] | None = None,
        detail: str = "",
        lengths: tuple[int, ...] | None = None,
    ) -> int | None:
        """Analytic forward FLOPs (matmul-class, 2 per multiply-add, as the FLOP counter
        counts) of one call of the path named ``detail``: for an attention module its token
        mixing (no q/k/v/output projections; those are counted by the counter), on ``batch``
        sequences of ``seq_len`` positions whose real lengths are ``lengths`` (None: all
        full).  Used by the benchmark where :meth:`counter_blind` says the counter is blind;
        a blind backward is counted as 2.5 × this.  ``None``: no analytic count (the row's
        ``flops_method`` is then ``partial``)."""
        return None
