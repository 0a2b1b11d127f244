"""Causal LDA as a chunked scan (the PyTorch path of ``elastic-causal``).

For every dispatcher j and head h, position t packs only positions s ≤ t::

    pack_t^h[j] = Σ_{s≤t} exp(S_js - m_t) v1_s / Σ_{s≤t} exp(S_js - m_t),   S_js = q1_j · k1_s

with the running max m_t, normaliser l_t and accumulator carried from chunk to chunk
(the online softmax of FlashAttention, one state per dispatcher).  Inside a chunk of c
positions the cumulative sums are a masked c×c product, each row relative to its own
running max, so any score range stays finite.  The per-position dispatchers
P_t = P + o1(pack_t) then feed the unpack step through folded weights (see
:meth:`LDALayer.folded_unpack_weights`)::

    score_t^g[j] = q2_t^g · Ck^g[j] + Σ_h pack_t^h[j] · (Gk^{h,g} q2_t^g)
    out_t^g      = Σ_j a_t^g[j] Cv^g[j] + Σ_h (Σ_j a_t^g[j] pack_t^h[j]) Gv^{h,g}

so P_t's keys and values are never built.  Time O(N·k·d·c), extra memory
O(c·k·d) per chunk: under autograd each chunk is recomputed in the backward pass
(activation checkpointing) instead of keeping every chunk's O(c·k·d) intermediates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def _chunk(
    q1: Tensor,
    k1: Tensor,
    v1: Tensor,
    mask: Tensor,
    q2: Tensor,
    ck: Tensor,
    cv: Tensor,
    gk: Tensor,
    gv: Tensor,
    m: Tensor,
    l: Tensor,
    acc: Tensor,
    dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One chunk: shapes q1 [B|1,h,k,d], k1/v1 [B,h,c,d], mask [B,c], q2 [B,h,c,d], state m/l [B,h,k], acc [B,h,k,d]."""
    c = k1.shape[2]
    s = torch.einsum("bhkd,bhcd->bhkc", q1, k1)
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    # running max at each t: only a reference the result does not depend on, so no gradient
    m_t = torch.maximum(m[..., None], torch.cummax(s.detach(), dim=-1).values)
    ref = torch.where(torch.isfinite(m_t), m_t, torch.zeros_like(m_t))
    tri = torch.ones(c, c, dtype=torch.bool, device=s.device).tril()
    # mask before exp: a later score may exceed an earlier row's reference by > 88 (inf, then NaN grads)
    w = torch.exp((s[..., None, :] - ref[..., :, None]).masked_fill(~tri, float("-inf")))  # [B,h,k,t,s]
    decay = torch.exp(m[..., None] - ref)  # rescales the carried state to each t's reference
    l_t = decay * l[..., None] + w.sum(-1)
    acc_t = decay[..., None] * acc[..., None, :] + torch.einsum("bhkts,bhsd->bhktd", w, v1)
    # 0 before any real token (l = acc = 0); dividing by 1 there keeps those gradients finite
    packed = acc_t / torch.where(l_t > 0, l_t, torch.ones_like(l_t))[..., None]  # [B,h,k,c,d]
    # unpack through the folded weights
    r = torch.einsum("hgde,bgce->bhgcd", gk, q2)
    scores = torch.einsum("bgcd,bgkd->bgck", q2, ck.expand(q2.shape[0], -1, -1, -1)) + torch.einsum("bhkcd,bhgcd->bgck", packed, r)
    a = torch.softmax(scores, dim=-1)
    if dropout_p:
        a = F.dropout(a, dropout_p, True)
    z = torch.einsum("bgck,bhkcd->bhgcd", a, packed)
    out = torch.einsum("bgck,bgkd->bgcd", a, cv.expand(q2.shape[0], -1, -1, -1)) + torch.einsum("bhgcd,hgde->bgce", z, gv)
    return out, m_t[..., -1], l_t[..., -1], acc_t[..., -1, :]


def causal_lda_scan(
    q1: Tensor,
    k1: Tensor,
    v1: Tensor,
    mask: Tensor,
    q2: Tensor,
    ck: Tensor,
    cv: Tensor,
    gk: Tensor,
    gv: Tensor,
    chunk_size: int = 32,
    dropout_p: float = 0.0,
) -> Tensor:
    """Causal pack + unpack over the whole sequence; returns the per-head unpack output ``[B, h, N, d_h]``.

    ``q1`` and ``q2`` must already be scaled by 1/√d_h.  Half-precision inputs are scanned in
    float32 (running max, normaliser and accumulator included, as FlashAttention keeps its
    statistics), with autocast off, and the output is cast back.
    """
    out_dtype = k1.dtype
    if out_dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(k1.device.type):
        with torch.autocast(k1.device.type, enabled=False):
            f32 = [t.float() for t in (q1, k1, v1)] + [mask] + [t.float() for t in (q2, ck, cv, gk, gv)]
            out = causal_lda_scan(*f32, chunk_size=chunk_size, dropout_p=dropout_p)
        return out.to(out_dtype)
    b, h, n, dh = k1.shape
    k = q1.shape[2]
    m = torch.full((b, h, k), float("-inf"), dtype=k1.dtype, device=k1.device)
    l = torch.zeros((b, h, k), dtype=k1.dtype, device=k1.device)
    acc = torch.zeros((b, h, k, dh), dtype=k1.dtype, device=k1.device)
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in (q1, k1, v1, q2, ck, cv, gk, gv))
    outs = []
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        args = (q1, k1[:, :, sl], v1[:, :, sl], mask[:, sl], q2[:, :, sl], ck, cv, gk, gv, m, l, acc, dropout_p)
        if use_ckpt:
            out, m, l, acc = checkpoint(_chunk, *args, use_reentrant=False, preserve_rng_state=dropout_p > 0)
        else:
            out, m, l, acc = _chunk(*args)
        outs.append(out)
    return torch.cat(outs, dim=2)
