"""Linear Dispatcher Attention (LDA): the layer at the heart of ELASTIC (ELASTIC_SPEC.md §1).

Sequence tokens X (N×d), k dispatcher tokens P (k×d), h heads of width d_h = d/h::

    pack:    P' = softmax( (P Wq1)(X Wk1)ᵀ / √d_h ) (X Wv1)      # k queries over N keys
    unpack:  X' = softmax( (X Wq2)(P' Wk2)ᵀ / √d_h ) (P' Wv2)     # N queries over k keys

Block layout (pre-LN; LN(X) is applied by the caller, as for every attention)::

    P  <- P + PackAttn(LN(P), LN(X), key_padding_mask)     ; P <- P + FFN(LN(P))
    X' =      UnpackAttn(LN(X), LN(P))                      ; returned, P carried to the next layer

Cost O(N·k·d) per layer, attention memory O(N·k).

**Causal variant** (``causal=True``, the ``elastic-causal`` backend).  Position t may only
see positions ≤ t, so every position has its own packed dispatchers::

    P_t = P + PackAttn_{≤t}(LN(P), LN(X))        # cumulative softmax over s ≤ t
    X'_t = UnpackAttn(LN(X)_t, P_t)

Decisions (the paper is silent; see README "ELASTIC's unspecified choices"):

- P_t is used by the unpack step without a LayerNorm or FFN of its own: those would be
  applied k times per position (O(N·k·d·d_ff) per layer), and without them the unpack's
  key/value projections fold into the pack's output projection, so the chunked scan
  (:mod:`elastic_bench.elastic.causal`) never builds P_t's keys and values at all.
- The dispatcher state carried to the next layer is P + FFN(LN(P)), which holds no
  sequence information: a per-position carried state would make the next layer's pack
  step quadratic.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import FeedForward
from . import kernels
from .causal import causal_lda_scan


class HeadProjection(nn.Module):
    """``Linear(d, d)`` whose output is split into heads: ``[B, M, d] -> [B, h, M, d_h]``."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, m, d = x.shape
        return self.linear(x).view(b, m, self.heads, d // self.heads).transpose(1, 2)


def merge_heads(t: Tensor) -> Tensor:
    """``[B, h, M, d_h] -> [B, M, h·d_h]``."""
    b, h, m, dh = t.shape
    return t.transpose(1, 2).reshape(b, m, h * dh)


def pack(q1: Tensor, k1: Tensor, v1: Tensor, mask: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Non-causal pack: k dispatcher queries ``q1 [B|1, h, k, d_h]`` over the N real keys.

    ``mask [B, N]`` (True = real).  A sequence with no real token gets zero dispatchers.
    Returns ``[B, h, k, d_h]``.
    """
    b = k1.shape[0]
    q1 = q1.expand(b, -1, -1, -1)
    has_real = mask.any(dim=1)
    key_mask = (mask | ~has_real[:, None])[:, None, None, :]  # all-pad rows: read anything, zeroed below
    out = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=key_mask, dropout_p=dropout_p)
    return out * has_real[:, None, None, None].to(out.dtype)


def unpack(q2: Tensor, k2: Tensor, v2: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Non-causal unpack: N queries ``q2 [B, h, N, d_h]`` over the k dispatchers ``k2, v2 [B|1, h, k, d_h]``."""
    b = q2.shape[0]
    return F.scaled_dot_product_attention(q2, k2.expand(b, -1, -1, -1), v2.expand(b, -1, -1, -1), dropout_p=dropout_p)


class LDALayer(nn.Module):
    """One LDA layer: ``forward(LN(X), mask, P) -> (X', P_next)``.

    ``P`` is ``[B, k, d]`` (sequence-dependent dispatchers) or ``[1, k, d]`` (static ones).
    """

    def __init__(
        self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, ffn_mult: int = 4, chunk_size: int = 32, ffn_act: str = "gelu"
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.causal = causal
        self.chunk_size = chunk_size
        self.dropout_p = dropout
        # pack: dispatchers (queries) over the sequence (keys, values)
        self.ln_pack = nn.LayerNorm(d_model)
        self.q1, self.k1, self.v1 = HeadProjection(d_model, heads), HeadProjection(d_model, heads), HeadProjection(d_model, heads)
        self.o1 = nn.Linear(d_model, d_model)
        # dispatcher FFN
        self.ln_ffn = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout, ffn_act)
        # unpack: the sequence (queries) over the dispatchers (keys, values)
        self.ln_unpack = None if causal else nn.LayerNorm(d_model)  # non-causal only (module docstring)
        self.q2, self.k2, self.v2 = HeadProjection(d_model, heads), HeadProjection(d_model, heads), HeadProjection(d_model, heads)
        self.o2 = nn.Linear(d_model, d_model)
        self.backend_detail = "torch:sdpa" if not causal else f"torch:chunked-scan(c={chunk_size})"
        self.kernel_reason = ""  # why the PyTorch path ran on the last call ('' when Triton ran); see kernels.decide

    def _drop(self) -> float:
        return self.dropout_p if self.training else 0.0

    def forward(self, xn: Tensor, mask: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if self.causal:
            return self._forward_causal(xn, mask, p)
        q1, k1, v1 = self.q1(self.ln_pack(p)), self.k1(xn), self.v1(xn)
        dec = kernels.decide("pack+unpack", [q1, k1, v1], self.head_dim, q1.shape[2], self._drop())
        self.backend_detail, self.kernel_reason = ("triton:pack+unpack" if dec.use_triton else "torch:sdpa"), dec.reason
        if dec.use_triton:
            packed = kernels.load("pack").pack_attention(q1, k1, v1, mask)
        else:
            packed = pack(q1, k1, v1, mask, self._drop())
        p = p + self.o1(merge_heads(packed))
        p = p + self.ffn(self.ln_ffn(p))
        pn = self.ln_unpack(p)
        q2, k2, v2 = self.q2(xn), self.k2(pn), self.v2(pn)
        if dec.use_triton:
            out = kernels.load("unpack").unpack_attention(q2, k2, v2)
        else:
            out = unpack(q2, k2, v2, self._drop())
        return self.o2(merge_heads(out)), p

    def folded_unpack_weights(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The causal unpack's keys/values of P_t = P + o1(pack_t), split into a static part
        and a part linear in the per-head pack outputs::

            K2_t^g = Ck^g + Σ_h pack_t^h · Gk^{h,g}      Ck = k2(P + b_o1),  Gk = W_o1ᵀ W_k2ᵀ
            V2_t^g = Cv^g + Σ_h pack_t^h · Gv^{h,g}      Cv = v2(P + b_o1),  Gv = W_o1ᵀ W_v2ᵀ

        Returns ``Ck, Cv [B|1, h, k, d_h]`` and ``Gk, Gv [h, h, d_h, d_h]`` (indexed [h, g, d, e]).
        """
        h, dh = self.heads, self.head_dim
        base = p + self.o1.bias
        ck, cv = self.k2(base), self.v2(base)
        w_o1_t = self.o1.weight.t()
        gk = (w_o1_t @ self.k2.linear.weight.t()).view(h, dh, h, dh).permute(0, 2, 1, 3)
        gv = (w_o1_t @ self.v2.linear.weight.t()).view(h, dh, h, dh).permute(0, 2, 1, 3)
        return ck, cv, gk, gv

    def _forward_causal(self, xn: Tensor, mask: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        q1 = self.q1(self.ln_pack(p))
        ck, cv, gk, gv = self.folded_unpack_weights(p)
        args = (q1 / math.sqrt(self.head_dim), self.k1(xn), self.v1(xn), mask, self.q2(xn) / math.sqrt(self.head_dim), ck, cv, gk, gv)
        dec = kernels.decide("causal-scan", [t for t in args if t is not mask], self.head_dim, q1.shape[2], self._drop())
        self.kernel_reason = dec.reason
        if dec.use_triton:
            scan = kernels.load("causal_scan")
            out = scan.causal_lda_scan(*args, chunk_size=self.chunk_size)
            self.backend_detail = f"triton:causal-scan(c={scan.kernel_chunk(self.chunk_size)})"
        else:
            out = causal_lda_scan(*args, chunk_size=self.chunk_size, dropout_p=self._drop())
            self.backend_detail = f"torch:chunked-scan(c={self.chunk_size})"
        p_next = p + self.ffn(self.ln_ffn(p))
        return self.o2(merge_heads(out)), p_next
