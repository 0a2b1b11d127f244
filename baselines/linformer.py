"""Linformer (Wang et al., 2020): softmax attention over keys and values projected along
the sequence to a fixed length ``r`` (option ``proj_len``, default 64).

    K' = M_K · Pool_L(K),   V' = M_V · Pool_L(V),   Y = softmax(Q K'^T / sqrt(d_h)) V'

Cost O(N·r·d) time and O(N·r) memory: linear in N.  Non-causal only (every projected
key mixes the whole sequence).

**Padding, and why the projection is not Linformer's.**  The original projection
``E ∈ R^{r×N}`` is a learned matrix over *absolute* positions: it is tied to one
sequence length and it mixes padding tokens into every projected key, so padding (and
where it sits) changes the real outputs.  Ours factors the projection through the real
tokens only:

- ``Pool_L`` is adaptive average pooling of the ``L`` *real* tokens (in order) into ``r``
  segments: segment ``i`` averages real tokens ``floor(i·L/r) .. ceil((i+1)·L/r) - 1``
  (as ``nn.AdaptiveAvgPool1d``).  A token's weight depends only on its index among the
  real tokens and on ``L``, so prepending or appending padding changes nothing; it is
  defined at every length (for ``L < r`` segments repeat tokens, none is empty).
- ``M_K, M_V ∈ R^{r×r}`` are learned mixings of the segments (initialised to the
  identity), the learned part of Linformer's ``E`` and ``F``, shared across heads.

Segment pooling was chosen over learned per-position weights indexed by real position
because it needs no maximum length and keeps every projected key a proper average of
real tokens at any ``L``.  Our version honours padding masks; the original ignores them.

Example::

    >>> attn = LinformerBackend.build(d_model=64, heads=2, proj_len=16)
    >>> y = attn(torch.randn(2, 5000, 64), torch.ones(2, 5000, dtype=torch.bool))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elastic_bench.attention import Backend, Capabilities, QKVAttention, attend_last_via_attend


def pool_matrix(mask: Tensor, r: int, dtype: torch.dtype) -> Tensor:
    """``[B, r, N]`` adaptive-average-pooling weights of each sequence's real tokens into ``r`` segments."""
    real_index = mask.long().cumsum(1) - 1  # index among the real tokens (valid where mask)
    length = mask.long().sum(1)[:, None, None]  # [B, 1, 1]
    seg = torch.arange(r, device=mask.device)[None, :, None]  # [1, r, 1]
    start = (seg * length) // r
    end = ((seg + 1) * length + r - 1) // r  # ceil
    pos = real_index[:, None, :]
    inside = mask[:, None, :] & (pos >= start) & (pos < end)
    return inside.to(dtype) / (end - start).clamp_min(1).to(dtype)


class LinformerAttention(QKVAttention):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, proj_len: int = 64):
        super().__init__(d_model, heads, dropout, causal)
        if causal:
            raise ValueError("linformer has no causal variant")
        if proj_len < 1:
            raise ValueError(f"proj_len must be >= 1, got {proj_len}")
        self.proj_len = int(proj_len)
        self.mix_k = nn.Parameter(torch.eye(self.proj_len))
        self.mix_v = nn.Parameter(torch.eye(self.proj_len))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        pool = pool_matrix(mask, self.proj_len, q.dtype)  # [B, r, N]
        kp = torch.einsum("sr,brn,bhnd->bhsd", self.mix_k, pool, k)  # [B, H, r, d_h]
        vp = torch.einsum("sr,brn,bhnd->bhsd", self.mix_v, pool, v)
        p = torch.softmax(q @ kp.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)  # [B, H, N, r]
        p = F.dropout(p, self.dropout_p, self.training)
        self.backend_detail = f"linformer:r={self.proj_len}"
        return p @ vp

    attend_last = attend_last_via_attend  # one query, as attend takes it (non-causal: serve_step recomputes)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """One sequence at a time: slice the real tokens into segments, average, mix, attend."""
        r = self.proj_len
        out = torch.zeros_like(q)
        for b in range(q.shape[0]):
            idx = mask[b].nonzero().flatten()
            length = idx.numel()
            if length == 0:
                continue
            kr, vr = k[b][:, idx], v[b][:, idx]  # [H, L, d_h]
            segments = [(i * length // r, -(-(i + 1) * length // r)) for i in range(r)]
            k_seg = torch.stack([kr[:, s:e].mean(1) for s, e in segments], dim=1)  # [H, r, d_h]
            v_seg = torch.stack([vr[:, s:e].mean(1) for s, e in segments], dim=1)
            k_mix = self.mix_k @ k_seg  # [r, r] @ [H, r, d_h]
            v_mix = self.mix_v @ v_seg
            s = q[b][:, idx] @ k_mix.transpose(-1, -2) / math.sqrt(self.head_dim)
            out[b][:, idx] = torch.softmax(s, dim=-1) @ v_mix
        return out


class LinformerBackend(Backend):
    name = "linformer"
    summary = "Linformer low-rank attention; keys/values pooled over real tokens to proj_len, any N, padding-invariant"
    capabilities = Capabilities(causal=False, options={"proj_len": 64})
    module = LinformerAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """Pooling as a product with the [r, N] pooling matrix after the r×r mixing (einsum left to
        right), for K and V: 2·(2·B·r²·N + 2·B·N·r·d); then softmax attention of N queries over
        r keys: 4·B·N·r·d.  Total 4·B·r²·N + 8·B·N·r·d (d = H·d_h)."""
        r = int({**cls.capabilities.options, **(options or {})}["proj_len"])
        return 4 * batch * r * r * seq_len + 8 * batch * seq_len * r * d_model
