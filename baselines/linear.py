"""Linear attention (Katharopoulos et al., ICML 2020, "Transformers are RNNs") with the
feature map ``φ(x) = elu(x) + 1``:

    y_i = φ(q_i) · Σ_j φ(k_j) v_jᵀ  /  (φ(q_i) · Σ_j φ(k_j) + eps)

where ``j`` runs over the real keys (all of them, or those at positions ≤ i when causal).

- Non-causal: the sums ``S = Σ φ(k_j) v_jᵀ`` (d×d) and ``z = Σ φ(k_j)`` are formed once:
  O(N·d²) time, O(d²) state.
- Causal: chunked (option ``chunk_size``, default 64).  Inside a chunk, the C×C masked
  score block; across chunks, the running ``S`` and ``z`` carried forward.  O(N·C·d +
  N·d²) time; beyond the inputs, one chunk's C×C block and one d×d state at a time (the
  per-position prefix states ``[N, d, d]`` are never materialised).

Padding keys are zeroed after φ, so they add nothing to ``S`` or ``z`` and receive no
gradient (the original ignores padding masks; ours honours them).  The denominator carries
``eps`` so a query with no real key (padding under causal left padding) gives 0, not NaN.
There is no attention matrix to drop out: dropout (training only) acts on the output.

Example::

    >>> attn = LinearBackend.build(d_model=64, heads=2, causal=True, chunk_size=32)
    >>> y = attn(torch.randn(2, 100, 64), torch.ones(2, 100, dtype=torch.bool))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention

EPS = 1e-6


def feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1


@dataclass(frozen=True)
class LinearState:
    """Causal linear attention's per-user state of one layer: ``s [B, H, d_k, d_v]``, ``z [B, H, d_k]``."""

    s: Tensor
    z: Tensor


class LinearAttention(QKVAttention):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, chunk_size: int = 64):
        super().__init__(d_model, heads, dropout, causal)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        fq = feature_map(q)
        fk = feature_map(k) * mask[:, None, :, None].to(k.dtype)
        if self.causal:
            out = self._causal_chunked(fq, fk, v)
            self.backend_detail = f"linear:chunked(C={self.chunk_size})"
        else:
            state = fk.transpose(-1, -2) @ v  # [B, H, d_k, d_v]
            norm = fk.sum(-2)  # [B, H, d_k]
            out = (fq @ state) / (fq @ norm.unsqueeze(-1) + EPS)
            self.backend_detail = "linear:global"
        return F.dropout(out, self.dropout_p, self.training)

    def _causal_chunked(self, fq: Tensor, fk: Tensor, v: Tensor) -> Tensor:
        b, h, n, dk = fq.shape
        c = self.chunk_size
        state = fq.new_zeros(b, h, dk, v.shape[-1])  # Σ_{j < chunk start} φ(k_j) v_jᵀ
        norm = fq.new_zeros(b, h, dk, 1)  # Σ_{j < chunk start} φ(k_j)
        tril = torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
        outs = []
        for a in range(0, n, c):
            qc, kc, vc = fq[:, :, a : a + c], fk[:, :, a : a + c], v[:, :, a : a + c]
            m = qc.shape[2]
            scores = (qc @ kc.transpose(-1, -2)).masked_fill(~tril[:m, :m], 0.0)  # [B, H, m, m]
            num = scores @ vc + qc @ state
            den = scores.sum(-1, keepdim=True) + qc @ norm
            outs.append(num / (den + EPS))
            state = state + kc.transpose(-1, -2) @ vc
            norm = norm + kc.sum(-2).unsqueeze(-1)
        return torch.cat(outs, dim=2)

    # ---- serving: at the last position causal and non-causal agree (every key is at or before it)

    def attend_last(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        fk = feature_map(k) if mask is None else feature_map(k) * mask[:, None, :, None].to(k.dtype)
        fq = feature_map(q)
        self.backend_detail = "linear:global"
        return (fq @ (fk.transpose(-1, -2) @ v)) / (fq @ fk.sum(-2).unsqueeze(-1) + EPS)

    def init_state(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> LinearState | None:
        """Causal only: the running sums ``S = Σ φ(k_j) v_jᵀ [B, H, d_k, d_v]`` and ``z = Σ φ(k_j) [B, H, d_k]``."""
        if not self.causal:
            return None
        src = x if kv is None else kv
        fk = feature_map(self.split_heads(self.k_proj(src))) * mask[:, None, :, None].to(x.dtype)
        return LinearState(fk.transpose(-1, -2) @ self.split_heads(self.v_proj(src)), fk.sum(-2))

    def step(self, state: LinearState, x_new: Tensor, mask: Tensor | None, kv_new: Tensor | None = None) -> tuple[Tensor, LinearState]:
        """One appended position: ``S += φ(k)vᵀ``, ``z += φ(k)``, then ``φ(q)S / (φ(q)·z + eps)``: O(d_h²) per head, flat in N."""
        src = x_new if kv_new is None else kv_new
        fk = feature_map(self.split_heads(self.k_proj(src)))  # [B, H, 1, d_k]
        new = LinearState(state.s + fk.transpose(-1, -2) @ self.split_heads(self.v_proj(src)), state.z + fk[:, :, 0])
        fq = feature_map(self.split_heads(self.q_proj(x_new)))
        out = (fq @ new.s) / (fq @ new.z.unsqueeze(-1) + EPS)
        self.backend_detail = "running-state:linear"
        return self.out_proj(self.merge_heads(out)), new

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Explicit O(N²) form: A_ij = φ(q_i)·φ(k_j) on allowed (real, and j ≤ i if causal) pairs."""
        n = q.shape[-2]
        a = feature_map(q) @ feature_map(k).transpose(-1, -2)  # [B, H, N, N]
        allowed = mask[:, None, None, :].expand(-1, 1, n, n)
        if self.causal:
            allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        a = torch.where(allowed, a, torch.zeros_like(a))
        return (a @ v) / (a.sum(-1, keepdim=True) + EPS)


class LinearBackend(Backend):
    name = "linear"
    summary = "linear attention, phi = elu + 1 (Katharopoulos et al. 2020); causal chunk-wise, O(N d^2)"
    capabilities = Capabilities(options={"chunk_size": 64})
    module = LinearAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """Non-causal: S = φ(K)ᵀV, then φ(Q)S and the normaliser φ(Q)z: 4·B·H·N·d_h² + 2·B·H·N·d_h.
        Causal, per chunk of m positions: the m×m scores and their product with V, φ(Q)S,
        φ(Q)z and the state update: B·H·(4·m²·d_h + 4·m·d_h² + 2·m·d_h).  Padding is computed."""
        dh, bh = d_model // heads, batch * heads
        if not causal:
            return bh * seq_len * (4 * dh * dh + 2 * dh)
        c = int({**cls.capabilities.options, **(options or {})}["chunk_size"])
        return sum(bh * (4 * m * m * dh + 4 * m * dh * dh + 2 * m * dh) for m in (min(c, seq_len - a) for a in range(0, seq_len, c)))
