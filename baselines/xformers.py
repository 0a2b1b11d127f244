"""xFormers ``memory_efficient_attention``: exact softmax attention, fused.

O(N^2) time, O(N) extra memory.  CUDA only (fp32/fp16/bf16).  xFormers dispatches to its
fastest operator for the inputs (FlashAttention-3/2 or its CUTLASS kernel);
``backend_detail`` records which one (asked from xFormers' own dispatcher), and the bias.

- No padding: the ``[B, N, H, d_h]`` batch with ``LowerTriangularMask()`` (causal) or no bias.
- Padding: the real tokens are packed into one ``[1, total, H, d_h]`` sequence and attended
  with ``BlockDiagonalMask`` / ``BlockDiagonalCausalMask.from_seqlens(real lengths)``, so
  no query ever sees another sequence or a padding key, and causal attention counts real
  positions only (right for left and right padding).  Outputs are scattered back;
  padding positions get zeros.

Whether anything is padded, the real lengths and the block-diagonal bias are host-side
decisions (:meth:`XFormersAttention.mask_plan`: ``mask.all()``, ``nonzero`` and ``tolist``
each sync with the GPU); a benchmark makes them once with
:meth:`~elastic_bench.attention.Attention.prepare`, so its timed calls never sync.

``xformers`` is imported only when the module runs, never at import time.

Example (CUDA with xformers installed)::

    >>> attn = XFormersBackend.build(d_model=64, heads=2, causal=True).cuda().half()
    >>> y = attn(x, mask); attn.backend_detail
    'xformers:fa2F@...+BlockDiagonalCausalMask'
"""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention, masked_softmax_reference, sdpa_last_query
from elastic_bench.attention_flops import real_lengths, softmax_attention_flops

_op_cache: dict[tuple, str] = {}


def chosen_op(q: Tensor, k: Tensor, v: Tensor, bias, p: float) -> str:
    """Name of the forward operator xFormers' dispatcher picks for these inputs ("auto" if unknown)."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    key = (q.device, q.dtype, tuple(q.shape), type(bias).__name__, p > 0, needs_grad)
    if key not in _op_cache:
        name = "auto"
        try:
            from xformers.ops import fmha

            inputs_cls = getattr(fmha, "Inputs", None) or fmha.common.Inputs
            inp = inputs_cls(query=q, key=k, value=v, attn_bias=bias, p=p, scale=None)
            try:
                op = fmha._dispatch_fw(inp, needs_grad)
            except TypeError:  # older xformers: _dispatch_fw(inp)
                op = fmha._dispatch_fw(inp)
            name = str(getattr(op, "NAME", op.__name__))
        except Exception:
            pass
        _op_cache[key] = name
    return _op_cache[key]


def _from_seqlens(cls, lens: list[int], device: torch.device):
    """``cls.from_seqlens(lens)``, on ``device`` where this xFormers version accepts one."""
    if "device" in inspect.signature(cls.from_seqlens).parameters:
        return cls.from_seqlens(lens, device=device)
    return cls.from_seqlens(lens)


@dataclass(frozen=True)
class PackedPlan:
    """How a padded batch is packed into one block-diagonal sequence."""

    idx: Tensor  # flat indices of the real tokens, sequence by sequence, in order
    lens: list[int]  # the non-zero real lengths
    bias: Any  # BlockDiagonal(Causal)Mask.from_seqlens(lens); None when nothing is real


class XFormersAttention(QKVAttention):
    def mask_plan(self, mask: Tensor) -> PackedPlan | None:
        """``None`` when nothing is padded, else the packing of ``mask`` (host syncs on CUDA)."""
        if bool(mask.all()):
            return None
        lens = [int(x) for x in mask.sum(1).tolist() if x > 0]
        bias = None
        if lens:
            from xformers.ops.fmha import attn_bias as xbias

            bias = _from_seqlens(xbias.BlockDiagonalCausalMask if self.causal else xbias.BlockDiagonalMask, lens, mask.device)
        return PackedPlan(mask.reshape(-1).nonzero().flatten(), lens, bias)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        import xformers.ops as xops
        from xformers.ops.fmha import attn_bias as xbias

        p = self.dropout_p if self.training else 0.0
        b, h, n, dh = q.shape
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, N, H, d_h]
        plan = self.plan_for(mask)  # prepared: no host sync here
        if plan is None:
            bias = xbias.LowerTriangularMask() if self.causal else None
            op = chosen_op(qt, kt, vt, bias, p)
            out = xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias, p=p)
            self.backend_detail = f"xformers:{op}+{type(bias).__name__ if bias is not None else 'nobias'}"
            return out.transpose(1, 2)

        out = q.new_zeros(b * n, h, dh)
        if plan.bias is None:
            self.backend_detail = "xformers:none"
            return out.view(b, n, h, dh).transpose(1, 2)
        qp, kp, vp = (t.reshape(b * n, h, dh).index_select(0, plan.idx).unsqueeze(0) for t in (qt, kt, vt))
        op = chosen_op(qp, kp, vp, plan.bias, p)
        packed = xops.memory_efficient_attention(qp, kp, vp, attn_bias=plan.bias, p=p)
        out = out.index_copy(0, plan.idx, packed[0].to(out.dtype))
        self.backend_detail = f"xformers:{op}+{type(plan.bias).__name__}"
        return out.view(b, n, h, dh).transpose(1, 2)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_softmax_reference(q, k, v, mask, self.causal)

    kv_cache = True

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Serving (``serve``'s last query, ``serve_step``'s KV cache): one query per sequence goes
        through PyTorch SDPA, not xformers (a single-query decode is not what its kernel here is
        for); ``backend_detail`` says so: ``sdpa-fallback:<the SDPA kernel>``."""
        return sdpa_last_query(self, q, k, v, mask)


class XFormersBackend(Backend):
    name = "xformers"
    summary = "xFormers memory_efficient_attention (block-diagonal bias for padding), CUDA"
    capabilities = Capabilities(
        devices=("cuda",),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        requires=("xformers",),
    )
    module = XFormersAttention

    @classmethod
    def counter_blind(cls, detail: str) -> tuple[str, ...]:
        """xFormers' kernels are not ATen ops: the FLOP counter sees neither pass."""
        return ("fwd", "bwd")

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """memory_efficient_attention forward: 4·H·d_h per query–key pair; over the real tokens
        of each sequence when padded (block-diagonal bias), the causal half skipped."""
        return softmax_attention_flops([n for n in real_lengths(batch, seq_len, lengths) if n], heads, d_model // heads, causal)

    @classmethod
    def versions(cls) -> dict[str, str]:
        try:
            return {"xformers": importlib.metadata.version("xformers")}
        except importlib.metadata.PackageNotFoundError:
            return {}
