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

``xformers`` is imported only when the module runs, never at import time.

Example (CUDA with xformers installed)::

    >>> attn = XFormersBackend.build(d_model=64, heads=2, causal=True).cuda().half()
    >>> y = attn(x, mask); attn.backend_detail
    'xformers:fa2F@...+BlockDiagonalCausalMask'
"""

from __future__ import annotations

import importlib.metadata
import inspect

import torch
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention, masked_softmax_reference

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


class XFormersAttention(QKVAttention):
    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        import xformers.ops as xops
        from xformers.ops.fmha import attn_bias as xbias

        p = self.dropout_p if self.training else 0.0
        b, h, n, dh = q.shape
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, N, H, d_h]
        if bool(mask.all()):
            bias = xbias.LowerTriangularMask() if self.causal else None
            op = chosen_op(qt, kt, vt, bias, p)
            out = xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias, p=p)
            self.backend_detail = f"xformers:{op}+{type(bias).__name__ if bias is not None else 'nobias'}"
            return out.transpose(1, 2)

        idx = mask.reshape(-1).nonzero().flatten()  # real tokens, sequence by sequence, in order
        out = q.new_zeros(b * n, h, dh)
        lens = [int(x) for x in mask.sum(1).tolist() if x > 0]
        if not lens:
            self.backend_detail = "xformers:none"
            return out.view(b, n, h, dh).transpose(1, 2)
        cls = xbias.BlockDiagonalCausalMask if self.causal else xbias.BlockDiagonalMask
        bias = _from_seqlens(cls, lens, q.device)
        qp, kp, vp = (t.reshape(b * n, h, dh).index_select(0, idx).unsqueeze(0) for t in (qt, kt, vt))
        op = chosen_op(qp, kp, vp, bias, p)
        packed = xops.memory_efficient_attention(qp, kp, vp, attn_bias=bias, p=p)
        out = out.index_copy(0, idx, packed[0].to(out.dtype))
        self.backend_detail = f"xformers:{op}+{cls.__name__}"
        return out.view(b, n, h, dh).transpose(1, 2)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_softmax_reference(q, k, v, mask, self.causal)


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
    def versions(cls) -> dict[str, str]:
        try:
            return {"xformers": importlib.metadata.version("xformers")}
        except importlib.metadata.PackageNotFoundError:
            return {}
