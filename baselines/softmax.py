"""Standard softmax attention, eager: matmul -> mask -> softmax -> matmul.

This is the "standard attention" of SASRec and of ELASTIC's efficiency claim: it
materialises the full ``[B, H, N, N]`` score matrix.

Example::

    >>> attn = SoftmaxBackend.build(d_model=64, heads=2, causal=True)
    >>> y = attn(torch.randn(2, 10, 64), torch.ones(2, 10, dtype=torch.bool))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention, key_mask_or_all, masked_softmax_reference
from elastic_bench.attention_flops import real_lengths, softmax_attention_flops


def blocked_pairs(mask: Tensor, n: int, causal: bool) -> Tensor:
    """Boolean ``[B, 1, N, N]``: True where a query may **not** read a key.

    One byte per pair, not a float bias: the eager path stays "standard attention" (it
    materialises the ``N × N`` scores) without also paying for a float ``[B, 1, N, N]``
    bias and an extra add on every call.  A query whose keys are all masked (a padding
    position under causal left padding) is allowed to read itself so that its row stays
    finite; its output is unspecified.
    """
    blocked = ~mask[:, None, None, :]  # [B, 1, 1, N]
    if causal:
        blocked = blocked | torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    return blocked & ~torch.eye(n, dtype=torch.bool, device=mask.device)


class SoftmaxAttention(QKVAttention):
    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        n = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        s.masked_fill_(blocked_pairs(mask, n, self.causal), float("-inf"))  # in place: no second N×N buffer
        p = torch.softmax(s, dim=-1)
        p = F.dropout(p, self.dropout_p, self.training)
        self.backend_detail = "eager"
        return p @ v

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_softmax_reference(q, k, v, mask, self.causal)

    kv_cache = True

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Serving: one query over every key, eagerly (``[B, H, 1, n]`` scores); a row without a
        real key reads them all (finite, unspecified)."""
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask is not None:
            s.masked_fill_(~key_mask_or_all(mask)[:, None, None, :], float("-inf"))
        self.backend_detail = "eager"
        return torch.softmax(s, dim=-1) @ v


class SoftmaxBackend(Backend):
    name = "softmax"
    summary = "eager softmax attention (SASRec's standard attention), O(N^2) memory"
    capabilities = Capabilities()
    module = SoftmaxAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """The eager path computes all B·N² scores (padding and a causal mask's upper half
        included, masked afterwards): 4·B·H·N²·d_h.  Visible to the FLOP counter; for checks."""
        return softmax_attention_flops(real_lengths(batch, seq_len, None), heads, d_model // heads, causal=False)
