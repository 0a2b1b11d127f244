"""LightSANs (Fan et al., SIGIR 2021, "Lighter and Better: Low-Rank Decomposed
Self-Attention Networks for Next-Item Recommendation"): each query attends ``k`` latent
interests (option ``interests``, default 32) instead of the N items.

Item-to-interest aggregation, for keys and for values with their own learned
``Θ_K, Θ_V ∈ R^{D×k}`` (over the full model width, before the head split, as in RecBole's
``ItemToInterestAggregation``)::

    W = softmax_over_positions(K Θ_K)   # [N, k], each column a distribution over real items
    K̃ = Wᵀ K                            # [k, D]   (likewise Ṽ with Θ_V)
    Y = softmax(Q K̃ᵀ / sqrt(d_h)) Ṽ      # per head: [N, k] attention

Cost O(N·k·d) time and O(N·k) memory.  Non-causal (every interest aggregates the whole
sequence).  The original's softmax over positions includes padding items; ours runs over
the real tokens only, so it honours padding masks.  The paper's decoupled position
encoding is not part of this module: position information comes from the recommender's
shared position embedding, as for every backend.  Θ is initialised N(0, 1/D) (RecBole
uses N(0, 1), which saturates the position softmax at D = 64).

Example::

    >>> attn = LightSANsBackend.build(d_model=64, heads=2, interests=8)
    >>> y = attn(torch.randn(2, 100, 64), torch.ones(2, 100, dtype=torch.bool))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elastic_bench.attention import Backend, Capabilities, QKVAttention, attend_last_via_attend


class LightSANsAttention(QKVAttention):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, interests: int = 32):
        super().__init__(d_model, heads, dropout, causal)
        if causal:
            raise ValueError("lightsans has no causal variant")
        if interests < 1:
            raise ValueError(f"interests must be >= 1, got {interests}")
        self.interests = int(interests)
        self.theta_k = nn.Parameter(torch.randn(d_model, self.interests) / math.sqrt(d_model))
        self.theta_v = nn.Parameter(torch.randn(d_model, self.interests) / math.sqrt(d_model))

    def aggregate(self, t: Tensor, theta: Tensor, mask: Tensor) -> Tensor:
        """``[B, H, N, d_h]`` -> ``[B, H, k, d_h]``: interest-weighted averages of the real tokens."""
        b, h, n, dh = t.shape
        logits = torch.einsum("bhnd,hdk->bnk", t, theta.view(h, dh, self.interests))  # = merge_heads(t) @ theta
        logits = logits.masked_fill(~mask[:, :, None], torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=1)  # over positions
        return torch.einsum("bnk,bhnd->bhkd", weights, t)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        ki = self.aggregate(k, self.theta_k, mask)
        vi = self.aggregate(v, self.theta_v, mask)
        p = torch.softmax(q @ ki.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)  # [B, H, N, k]
        p = F.dropout(p, self.dropout_p, self.training)
        self.backend_detail = f"lightsans:k={self.interests}"
        return p @ vi

    attend_last = attend_last_via_attend  # one query, as attend takes it (non-causal: serve_step recomputes)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """One sequence at a time, in model width: exp-normalise over the real items by hand."""
        b, h, n, dh = q.shape
        out = torch.zeros_like(q)
        for i in range(b):
            idx = mask[i].nonzero().flatten()
            if idx.numel() == 0:
                continue
            kr = k[i][:, idx].transpose(0, 1).reshape(idx.numel(), h * dh)  # [L, D]
            vr = v[i][:, idx].transpose(0, 1).reshape(idx.numel(), h * dh)
            interests = []
            for t, theta in ((kr, self.theta_k), (vr, self.theta_v)):
                logits = t @ theta  # [L, k]
                e = torch.exp(logits - logits.max(dim=0).values)
                w = e / e.sum(dim=0)
                interests.append((w.transpose(0, 1) @ t).view(self.interests, h, dh).transpose(0, 1))  # [H, k, d_h]
            ki, vi = interests
            s = q[i] @ ki.transpose(-1, -2) / math.sqrt(dh)  # [H, N, k]
            e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
            out[i] = (e / e.sum(dim=-1, keepdim=True)) @ vi
        return out


class LightSANsBackend(Backend):
    name = "lightsans"
    summary = "LightSANs low-rank decomposed self-attention over k latent interests (Fan et al., SIGIR 2021)"
    capabilities = Capabilities(causal=False, options={"interests": 32})
    module = LightSANsAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """Per aggregation (keys, values): logits KΘ and the weighted sum, 2·(2·B·N·d·k); then N
        queries over k interests, 4·B·N·k·d.  Total 12·B·N·k·d (d = H·d_h, k = interests)."""
        k = int({**cls.capabilities.options, **(options or {})}["interests"])
        return 12 * batch * seq_len * k * d_model
