"""Softmax attention through PyTorch's ``F.scaled_dot_product_attention`` (SDPA).

Same mathematics as :mod:`baselines.softmax` (exact softmax attention, O(N^2) time), but
fused: the flash and memory-efficient kernels never materialise the ``[N, N]`` score
matrix (O(N) extra memory); the math kernel does.  Four backends:

- ``sdpa``: PyTorch chooses the kernel; ``backend_detail`` records the one it chose
  (asked from PyTorch's own dispatcher ``torch._fused_sdp_choice`` with the exact call's
  arguments, e.g. ``"cuda:flash"``, ``"cpu:flash"``, ``"cpu:math"``).
- ``sdpa-flash``, ``sdpa-mem-efficient``, ``sdpa-math``: one kernel pinned with
  ``torch.nn.attention.sdpa_kernel``; a call the kernel cannot serve raises.

Padding: without padding (``mask.all()``), causal attention uses ``is_causal=True`` and no
mask, so the flash kernels stay eligible.  With padding a boolean ``[B, 1, N, N]`` mask
(key padding, combined with causal) is passed; a query with no readable key (a padding
position under causal left padding) reads itself so that its row stays finite.  Telling
the two cases apart costs one ``mask.all()`` (a host sync on CUDA), made once by
:meth:`~elastic_bench.attention.Attention.prepare` before a benchmark times the calls, or
per call when nothing was prepared.
The CUDA flash kernel takes no mask at all: ``sdpa-flash`` on CUDA refuses padding (see
:meth:`SDPAFlashBackend.unavailable_reason`); the CPU flash kernel takes masks (checked
with torch 2.13, fp64/fp32/fp16/bf16) and honours padding.

Example::

    >>> attn = SDPABackend.build(d_model=64, heads=2, causal=True)
    >>> y = attn(torch.randn(2, 10, 64), torch.ones(2, 10, dtype=torch.bool))
    >>> attn.backend_detail
    'cpu:flash'
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from elastic_bench.attention import ALL_DTYPES, Backend, Capabilities, QKVAttention, key_mask_or_all, masked_softmax_reference
from elastic_bench.attention_flops import real_lengths, softmax_attention_flops

KERNEL_NAMES: dict[int, str] = {
    int(SDPBackend.MATH): "math",
    int(SDPBackend.FLASH_ATTENTION): "flash",
    int(SDPBackend.EFFICIENT_ATTENTION): "mem-efficient",
    int(SDPBackend.CUDNN_ATTENTION): "cudnn",
}
if hasattr(SDPBackend, "OVERRIDEABLE"):
    KERNEL_NAMES[int(SDPBackend.OVERRIDEABLE)] = "overrideable"

_probe_cache: dict[tuple, str] = {}


def allowed_mask(mask: Tensor, causal: bool) -> Tensor:
    """Boolean ``[B, 1, N, N]``: True where a query may read a key (SDPA's convention).

    Key padding, combined with causal; every query may read itself, so no row is empty.
    """
    n = mask.shape[1]
    allowed = mask[:, None, None, :].expand(-1, 1, n, n)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    return allowed | torch.eye(n, dtype=torch.bool, device=mask.device)


def chosen_kernel(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float, is_causal: bool) -> str:
    """The SDPA kernel PyTorch dispatches these exact arguments to, as ``"<device>:<kernel>"``.

    Asks ``torch._fused_sdp_choice`` (the function SDPA itself calls, which honours the
    current ``sdpa_kernel`` context).  Where that private function is missing, probes the
    kernels in PyTorch's priority order, once per signature, and records the first one
    that accepts the call.
    """
    dev = q.device.type
    choice = getattr(torch, "_fused_sdp_choice", None)
    if choice is not None:
        try:
            return f"{dev}:{KERNEL_NAMES.get(int(choice(q, k, v, attn_mask, dropout_p, is_causal)), 'unknown')}"
        except Exception:  # private API changed: fall back to probing
            pass
    enabled = _enabled_kernels()
    key = (dev, q.dtype, tuple(q.shape), tuple(k.shape), attn_mask is not None, dropout_p > 0, is_causal,
           q.requires_grad or k.requires_grad or v.requires_grad, enabled)
    if key not in _probe_cache:
        order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
        get_order = getattr(torch._C, "_get_sdp_priority_order", None)
        if get_order is not None:
            try:
                order = [SDPBackend(int(i)) for i in get_order()]
            except Exception:
                pass
        order = [kernel for kernel in order if kernel in enabled]  # honour an enclosing sdpa_kernel(...)
        _probe_cache[key] = "unknown"
        for kernel in order:
            try:
                with torch.no_grad(), sdpa_kernel(kernel):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
            except Exception:
                continue
            _probe_cache[key] = KERNEL_NAMES.get(int(kernel), "unknown")
            break
    return f"{dev}:{_probe_cache[key]}"


def _enabled_kernels() -> tuple[SDPBackend, ...]:
    """The SDPA kernels currently enabled (``sdpa_kernel`` contexts toggle these flags)."""
    flags = {
        SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
        SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
        SDPBackend.CUDNN_ATTENTION: getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False),
        SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled,
    }
    return tuple(kernel for kernel, enabled in flags.items() if enabled())


class SDPAAttention(QKVAttention):
    """``F.scaled_dot_product_attention``; ``kernel`` pins one SDPA kernel (None: PyTorch picks)."""

    kernel: ClassVar[SDPBackend | None] = None

    def sdpa_args(self, mask: Tensor) -> tuple[Tensor | None, bool]:
        """``(attn_mask, is_causal)``: no mask at all when nothing is padded (decided by
        :meth:`plan_for`: no host sync once the mask was prepared)."""
        if not self.plan_for(mask):
            return None, self.causal
        return allowed_mask(mask, self.causal), False

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        attn_mask, is_causal = self.sdpa_args(mask)
        p = self.dropout_p if self.training else 0.0
        if self.kernel is None:
            self.backend_detail = chosen_kernel(q, k, v, attn_mask, p, is_causal)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        with sdpa_kernel(self.kernel):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        self.backend_detail = f"{q.device.type}:{KERNEL_NAMES[int(self.kernel)]}"
        return out

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_softmax_reference(q, k, v, mask, self.causal)

    kv_cache = True

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Serving: one query over every key (no causal mask: every key is at or before it); key
        padding as a boolean ``[B, 1, 1, n]`` mask, none when ``mask`` is None.  The kernel is the
        module's (pinned, or PyTorch's choice, recorded)."""
        attn_mask = None if mask is None else key_mask_or_all(mask)[:, None, None, :]
        if self.kernel is None:
            self.backend_detail = chosen_kernel(q, k, v, attn_mask, 0.0, False)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        with sdpa_kernel(self.kernel):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        self.backend_detail = f"{q.device.type}:{KERNEL_NAMES[int(self.kernel)]}"
        return out


class SDPAFlashAttention(SDPAAttention):
    kernel = SDPBackend.FLASH_ATTENTION

    def sdpa_args(self, mask: Tensor) -> tuple[Tensor | None, bool]:
        attn_mask, is_causal = super().sdpa_args(mask)
        if mask.device.type == "cuda" and attn_mask is not None:
            raise ValueError("sdpa-flash: the CUDA flash kernel takes no attention mask, so it cannot honour padding")
        if mask.device.type == "cpu" and self.training and self.dropout_p > 0:
            raise ValueError("sdpa-flash: the CPU flash kernel has no dropout; train with dropout=0 or use 'sdpa'")
        return attn_mask, is_causal


class SDPAMemEfficientAttention(SDPAAttention):
    kernel = SDPBackend.EFFICIENT_ATTENTION


class SDPAMathAttention(SDPAAttention):
    kernel = SDPBackend.MATH


class _SDPABase(Backend):
    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"torch": torch.__version__}

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """What the kernel computes: without padding a causal call uses ``is_causal``, and the
        fused kernels (flash, mem-efficient, cuDNN) skip the masked half, N(N+1)/2 pairs; with
        padding (a dense boolean mask) and on the math kernel, all N² pairs.  Visible to the
        FLOP counter (which counts causal calls at their causal pairs); for checks."""
        padded = any(n != seq_len for n in real_lengths(batch, seq_len, lengths))
        skips = causal and not padded and not detail.endswith(":math")
        return softmax_attention_flops(real_lengths(batch, seq_len, None), heads, d_model // heads, causal=skips)


class SDPABackend(_SDPABase):
    name = "sdpa"
    summary = "PyTorch scaled_dot_product_attention, kernel chosen by PyTorch (recorded)"
    capabilities = Capabilities()
    module = SDPAAttention


class SDPAFlashBackend(_SDPABase):
    name = "sdpa-flash"
    summary = "PyTorch SDPA pinned to the flash kernel (CUDA: fp16/bf16, no padding mask; CPU: any dtype, masks)"
    capabilities = Capabilities()
    module = SDPAFlashAttention

    @classmethod
    def unavailable_reason(cls, device="cpu", dtype=torch.float32, causal=None, head_dim=None, padding=False):
        reason = super().unavailable_reason(device, dtype, causal, head_dim, padding)
        if reason is None and torch.device(device).type == "cuda":
            if padding:
                return "the CUDA flash kernel takes no attention mask (padding would be ignored)"
            if head_dim is not None and head_dim > 256:
                return f"head dim {head_dim} > 256 (CUDA flash kernel)"
        return reason

    @classmethod
    def extra_unavailable_reason(cls, device: str, dtype: torch.dtype) -> str | None:
        if device != "cuda":
            return None
        if dtype not in (torch.float16, torch.bfloat16):
            return "the CUDA flash kernel runs fp16/bf16 only"
        if not torch.backends.cuda.is_flash_attention_available():
            return "this PyTorch build has no CUDA flash attention kernel"
        if torch.cuda.get_device_capability() < (8, 0):
            return "the CUDA flash kernel needs compute capability >= 8.0"
        return None


class SDPAMemEfficientBackend(_SDPABase):
    name = "sdpa-mem-efficient"
    summary = "PyTorch SDPA pinned to the memory-efficient kernel (CUDA only; honours masks)"
    # PyTorch has no CPU memory-efficient kernel, and its CUDA one has no fp64 path.
    capabilities = Capabilities(devices=("cuda",), dtypes=(torch.float32, torch.float16, torch.bfloat16))
    module = SDPAMemEfficientAttention


class SDPAMathBackend(_SDPABase):
    name = "sdpa-math"
    summary = "PyTorch SDPA pinned to the math kernel (unfused, O(N^2) memory)"
    capabilities = Capabilities(dtypes=ALL_DTYPES)
    module = SDPAMathAttention
