"""FlashAttention-2 (Dao, 2023) through the ``flash_attn`` package: exact softmax attention.

O(N^2) time, O(N) extra memory (the score matrix is never materialised).  CUDA only,
fp16/bf16, head dim <= 256, compute capability >= 8.0.

- No padding (``mask.all()``): ``flash_attn_func`` on ``[B, N, H, d_h]``.
- Padding: the real tokens are gathered into one packed ``[total, H, d_h]`` tensor with
  ``cu_seqlens`` (the cumulative real lengths) and run through ``flash_attn_varlen_func``;
  outputs are scattered back (padding positions get zeros).  Each sequence is attended
  over its real tokens only, so causal attention is right for left *and* right padding:
  the causal mask counts positions inside the packed sequence, never padded indices.

Whether anything is padded, and the packing (indices, ``cu_seqlens``, longest length),
are host-side decisions (:func:`varlen_plan`: ``mask.all()``, ``nonzero`` and ``max`` each
sync with the GPU); a benchmark makes them once with
:meth:`~elastic_bench.attention.Attention.prepare`, so its timed calls never sync.

``flash_attn`` is imported only when the module runs, never at import time.

Example (CUDA with flash-attn installed)::

    >>> attn = FlashAttnBackend.build(d_model=64, heads=2, causal=True).cuda().half()
    >>> y = attn(x, mask)          # x: [B, N, 64] fp16 on CUDA, mask: bool [B, N]
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention, masked_softmax_reference, sdpa_last_query
from elastic_bench.attention_flops import real_lengths, softmax_attention_flops


@dataclass(frozen=True)
class VarlenPlan:
    """How a padded batch is packed for ``flash_attn_varlen_func``."""

    idx: Tensor  # flat indices of the real tokens, sequence by sequence, in order
    cu_seqlens: Tensor  # int32 [B + 1]: cumulative real lengths
    max_len: int  # the longest real length


def varlen_plan(mask: Tensor) -> VarlenPlan | None:
    """``None`` when nothing is padded, else the packing of ``mask`` (host syncs on CUDA)."""
    if bool(mask.all()):
        return None
    lens = mask.sum(1, dtype=torch.int32)
    return VarlenPlan(mask.reshape(-1).nonzero().flatten(), F.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0)), int(lens.max()))


class FlashAttnAttention(QKVAttention):
    def mask_plan(self, mask: Tensor) -> VarlenPlan | None:
        return varlen_plan(mask)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        p = self.dropout_p if self.training else 0.0
        b, h, n, dh = q.shape
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [B, N, H, d_h]
        plan = self.plan_for(mask)  # prepared: no host sync here
        if plan is None:
            out = flash_attn_func(qt, kt, vt, dropout_p=p, causal=self.causal)
            self.backend_detail = "flash_attn_func"
            return out.transpose(1, 2)

        idx = plan.idx
        out = q.new_zeros(b * n, h, dh)
        if idx.numel() == 0:
            self.backend_detail = "flash_attn_varlen_func"
            return out.view(b, n, h, dh).transpose(1, 2)

        def unpad(t: Tensor) -> Tensor:
            return t.reshape(b * n, h, dh).index_select(0, idx)

        packed = flash_attn_varlen_func(
            unpad(qt), unpad(kt), unpad(vt), plan.cu_seqlens, plan.cu_seqlens, plan.max_len, plan.max_len, dropout_p=p, causal=self.causal
        )
        out = out.index_copy(0, idx, packed.to(out.dtype))
        self.backend_detail = "flash_attn_varlen_func"
        return out.view(b, n, h, dh).transpose(1, 2)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_softmax_reference(q, k, v, mask, self.causal)

    kv_cache = True

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Serving (``serve``'s last query, ``serve_step``'s KV cache): one query per sequence goes
        through PyTorch SDPA, not flash_attn (a single-query decode is not what its kernel here is
        for); ``backend_detail`` says so: ``sdpa-fallback:<the SDPA kernel>``."""
        return sdpa_last_query(self, q, k, v, mask)


class FlashAttnBackend(Backend):
    name = "flash-attn"
    summary = "FlashAttention-2 (flash_attn package; varlen for padding), CUDA fp16/bf16"
    capabilities = Capabilities(
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16),
        max_head_dim=256,
        requires=("flash_attn",),
    )
    module = FlashAttnAttention

    @classmethod
    def counter_blind(cls, detail: str) -> tuple[str, ...]:
        """flash-attn's kernels are not ATen ops: the FLOP counter sees neither pass."""
        return ("fwd", "bwd")

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """FlashAttention-2 forward: 4·H·d_h per query–key pair; over the real tokens of each
        sequence when padded (varlen), the causal half skipped (N(N+1)/2 pairs)."""
        return softmax_attention_flops([n for n in real_lengths(batch, seq_len, lengths) if n], heads, d_model // heads, causal)

    @classmethod
    def extra_unavailable_reason(cls, device: str, dtype: torch.dtype) -> str | None:
        if device == "cuda" and torch.cuda.get_device_capability() < (8, 0):
            return "FlashAttention-2 needs compute capability >= 8.0"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        try:
            return {"flash_attn": importlib.metadata.version("flash_attn")}
        except importlib.metadata.PackageNotFoundError:
            try:
                import flash_attn

                return {"flash_attn": str(flash_attn.__version__)}
            except Exception:
                return {}
