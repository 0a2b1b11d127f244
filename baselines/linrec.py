"""LinRec (Liu et al., SIGIR 2023, "LinRec: Linear Attention Mechanism for Long-term
Sequential Recommender Systems", arXiv 2411.01537): L2-normalised linear attention.

    Q̂ = elu(ρ_row(Q)),   K̂ = elu(ρ_col(K)),   Y = Q̂ (K̂ᵀ V)

``ρ_row`` L2-normalises each query (row, over the head dim); ``ρ_col`` L2-normalises each
key feature (column, along the sequence, over the real tokens only).  K̂ᵀV is d×d, so
the cost is O(N·d²) time and O(d²) state.  This is the mechanism as the paper describes
it (row-wise L2 normalisation of Q, column-wise of K, ELU, then the Q(KᵀV) association);
the equation's exact typesetting could not be re-checked when this file was written.

Differences from the authors' released code (github.com/Applied-Machine-Learning-Lab/
LinRec, ``layers.py``), which we do not follow: it applies ELU *before* normalising,
normalises each key over the head dim (per token), divides by sqrt(d_h), and ignores the
padding mask.  Ours honours padding masks: padding keys are zeroed before the column
norms and after ELU, so they neither enter the norms nor the sums, and receive no
gradient.  There is no attention matrix to drop out: dropout (training only) acts on the
output.

Non-causal only: the column norms of K span the whole sequence; a causal version would
need prefix norms, and since ELU is applied after normalising, the keys seen by query t
would change with t, so no running sum exists (O(N²)).  Not a LinRec mechanism.

Example::

    >>> attn = LinRecBackend.build(d_model=64, heads=2)
    >>> y = attn(torch.randn(2, 100, 64), torch.ones(2, 100, dtype=torch.bool))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from elastic_bench.attention import Backend, Capabilities, QKVAttention, attend_last_via_attend

EPS = 1e-12  # F.normalize's default: only guards an all-zero row/column


class LinRecAttention(QKVAttention):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__(d_model, heads, dropout, causal)
        if causal:
            raise ValueError("linrec has no causal variant")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :, None].to(k.dtype)
        qn = F.elu(F.normalize(q, dim=-1, eps=EPS))
        kn = F.elu(F.normalize(k * m, dim=-2, eps=EPS)) * m  # column norms over real tokens
        out = qn @ (kn.transpose(-1, -2) @ v)
        self.backend_detail = "linrec"
        return F.dropout(out, self.dropout_p, self.training)

    attend_last = attend_last_via_attend  # one query, as attend takes it (non-causal: serve_step recomputes)

    def attend_reference(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """One sequence at a time over its real tokens, with the explicit N×L attention matrix."""
        out = torch.zeros_like(q)
        for b in range(q.shape[0]):
            idx = mask[b].nonzero().flatten()
            if idx.numel() == 0:
                continue
            kr, vr = k[b][:, idx], v[b][:, idx]  # [H, L, d_h]
            col_norm = torch.sqrt((kr * kr).sum(dim=1, keepdim=True)).clamp_min(EPS)  # [H, 1, d_h]
            row_norm = torch.sqrt((q[b] * q[b]).sum(dim=-1, keepdim=True)).clamp_min(EPS)  # [H, N, 1]
            a = F.elu(q[b] / row_norm) @ F.elu(kr / col_norm).transpose(-1, -2)  # [H, N, L]
            out[b] = a @ vr
        return out


class LinRecBackend(Backend):
    name = "linrec"
    summary = "LinRec L2-normalised linear attention (Liu et al., SIGIR 2023), O(N d^2), non-causal"
    capabilities = Capabilities(causal=False)
    module = LinRecAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """K̂ᵀV, then Q̂(K̂ᵀV): 4·B·H·N·d_h²."""
        return 4 * batch * heads * seq_len * (d_model // heads) ** 2
