"""Non-causal pack as a Triton kernel: k dispatcher queries over the N real keys.

Math (per batch row b, head h; σ = ``scale``, default 1/√d_h, mask m_s ∈ {0, 1})::

    S_js   = σ · q_j · k_s          for real s (m_s = 1), -∞ for padding
    out_j  = Σ_s exp(S_js - M_j) v_s / L_j,   L_j = Σ_s exp(S_js - M_j),   M_j = max_s S_js
    out_j  = 0 when the row has no real token (as :func:`elastic_bench.elastic.lda.pack`)

Forward, flash-decoding style (k is small, N is long, so the parallelism is over N):

1. ``_pack_fwd_split``, grid ``(B·h, n_split)``: program (b·h, p) holds all k queries
   (``[BLOCK_K, BLOCK_D]``) on chip and walks its slice of the sequence in tiles of
   ``BLOCK_N`` keys with the online softmax (running max m, normaliser l, accumulator
   acc); the padding mask is applied to the scores.  It writes the partial ``(m, l, acc)``
   of its slice (fp32): ``B·h·n_split·k·(d_h + 2)`` floats, small next to K and V.
2. ``_pack_combine``, grid ``(B·h,)``: ``M = max_p m_p``, ``L = Σ_p l_p e^{m_p - M}``,
   ``out = Σ_p acc_p e^{m_p - M} / L`` (0 where L = 0: all-pad rows), and the log-sum-exp
   ``M + log L`` kept for the backward pass.

Backward (a Triton backward, no recomputation of the forward): ``_pack_bwd``, grid
``(B·h, n_split)``; program (b·h, p) recomputes ``P = exp(S - lse)`` tile by tile of its
slice and writes ``dV = Pᵀ dO`` and ``dK = σ dSᵀ Q`` for its keys, with
``dS = P ⊙ (dO Vᵀ - δ)``, ``δ_j = dO_j · out_j``; ``dQ = σ Σ_s dS K`` is accumulated per
program and the n_split partials are summed by PyTorch (and over the batch when the
queries are shared, ``q [1, h, k, d_h]``).

Limits: d_h ≤ 128 and k ≤ 128 (tiles are padded to powers of two ≥ 16 and masked), any N,
fp16 / bf16 / fp32 (fp32 products in IEEE precision), no attention dropout.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import block, dot_precision, interpret_mode, splits, tiles

INTERPRETED = interpret_mode()  # the flag @triton.jit saw (see kernels.load)
NEG = tl.constexpr(-1.0e30)  # "no real key yet": finite, so exp(NEG - NEG) = 1 and never inf - inf


@triton.jit
def _pack_fwd_split(
    Q, K, V, MASK, PM, PL, PACC,
    sqb, sqh, sqk, skb, skh, skn, svb, svh, svn, smb, smn,
    H, N, KD, DH, split_len, n_split, scale,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1).to(tl.int64)  # int64 before it scales: positions·strides may pass 2**31
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    kvalid = offs_k < KD
    dvalid = offs_d < DH
    q = tl.load(Q + b * sqb + h * sqh + offs_k[:, None] * sqk + offs_d[None, :], mask=kvalid[:, None] & dvalid[None, :], other=0.0)
    m_i = tl.full([BLOCK_K], NEG, tl.float32)
    l_i = tl.zeros([BLOCK_K], tl.float32)
    acc = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    start = pid_s * split_len
    end = tl.minimum(start + split_len, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + offs_n
        valid = cols < end
        real = tl.load(MASK + b * smb + cols * smn, mask=valid, other=0) != 0
        kt = tl.load(K + b * skb + h * skh + cols[None, :] * skn + offs_d[:, None], mask=valid[None, :] & dvalid[:, None], other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * scale
        s = tl.where(real[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * svb + h * svh + cols[:, None] * svn + offs_d[None, :], mask=valid[:, None] & dvalid[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    base = pid_bh.to(tl.int64) * n_split + pid_s
    tl.store(PM + base * BLOCK_K + offs_k, m_i)
    tl.store(PL + base * BLOCK_K + offs_k, l_i)
    tl.store(PACC + (base * BLOCK_K + offs_k[:, None]) * BLOCK_D + offs_d[None, :], acc)


@triton.jit
def _pack_combine(
    PM, PL, PACC, OUT, LSE,
    sob, soh, sok,
    H, KD, DH, n_split,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_s = tl.arange(0, BLOCK_S)
    base = pid_bh.to(tl.int64) * n_split
    svalid = offs_s < n_split
    m = tl.load(PM + (base + offs_s[:, None]) * BLOCK_K + offs_k[None, :], mask=svalid[:, None], other=NEG)
    l = tl.load(PL + (base + offs_s[:, None]) * BLOCK_K + offs_k[None, :], mask=svalid[:, None], other=0.0)
    m_all = tl.max(m, 0)
    l_all = tl.sum(l * tl.exp(m - m_all[None, :]), 0)
    acc = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    for p in range(0, n_split):
        m_p = tl.load(PM + (base + p) * BLOCK_K + offs_k)
        a_p = tl.load(PACC + ((base + p) * BLOCK_K + offs_k[:, None]) * BLOCK_D + offs_d[None, :])
        acc += a_p * tl.exp(m_p - m_all)[:, None]
    has = l_all > 0
    out = tl.where(has[:, None], acc / tl.where(has, l_all, 1.0)[:, None], 0.0)
    lse = tl.where(has, m_all + tl.log(tl.where(has, l_all, 1.0)), 0.0)
    kvalid = offs_k < KD
    tl.store(OUT + b * sob + h * soh + offs_k[:, None] * sok + offs_d[None, :], out.to(OUT.dtype.element_ty),
             mask=kvalid[:, None] & (offs_d < DH)[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * BLOCK_K + offs_k, lse)


@triton.jit
def _pack_bwd(
    Q, K, V, MASK, O, DO, LSE, DK, DV, DQP,
    sqb, sqh, sqk, skb, skh, skn, svb, svh, svn, smb, smn,
    sob, soh, sok, sdob, sdoh, sdok, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
    H, N, KD, DH, split_len, n_split, scale,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1).to(tl.int64)  # int64 before it scales: positions·strides may pass 2**31
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    kd_mask = (offs_k < KD)[:, None] & (offs_d < DH)[None, :]
    dvalid = offs_d < DH
    q = tl.load(Q + b * sqb + h * sqh + offs_k[:, None] * sqk + offs_d[None, :], mask=kd_mask, other=0.0)
    o = tl.load(O + b * sob + h * soh + offs_k[:, None] * sok + offs_d[None, :], mask=kd_mask, other=0.0)
    do = tl.load(DO + b * sdob + h * sdoh + offs_k[:, None] * sdok + offs_d[None, :], mask=kd_mask, other=0.0)
    lse = tl.load(LSE + pid_bh.to(tl.int64) * BLOCK_K + offs_k)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    dq = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    start = pid_s * split_len
    end = tl.minimum(start + split_len, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + offs_n
        valid = cols < end
        nd_mask = valid[:, None] & dvalid[None, :]
        real = tl.load(MASK + b * smb + cols * smn, mask=valid, other=0) != 0
        k = tl.load(K + b * skb + h * skh + cols[:, None] * skn + offs_d[None, :], mask=nd_mask, other=0.0)
        v = tl.load(V + b * svb + h * svh + cols[:, None] * svn + offs_d[None, :], mask=nd_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        s = tl.where(real[None, :], s, float("-inf"))
        p = tl.exp(s - lse[:, None])  # [BLOCK_K, BLOCK_N]
        dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PREC) * scale
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
        tl.store(DK + b * sdkb + h * sdkh + cols[:, None] * sdkn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=nd_mask)
        tl.store(DV + b * sdvb + h * sdvh + cols[:, None] * sdvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=nd_mask)
    base = pid_bh.to(tl.int64) * n_split + pid_s
    tl.store(DQP + (base * BLOCK_K + offs_k[:, None]) * BLOCK_D + offs_d[None, :], dq * scale)


def _mask_u8(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask.to(torch.uint8)


def _last_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def partial_states(q, k, v, mask, scale, block_n=None, split_tiles=None):
    """Launch ``_pack_fwd_split``: per-slice ``(m, l, acc)`` as ``[B, h, n_split, BLOCK_K(, BLOCK_D)]``
    fp32 (rows ≥ k and columns ≥ d_h are padding), plus ``(split_len, n_split)``.  Also the
    segment summaries of the causal scan (``scale = 1``: its queries come pre-scaled)."""
    b, h, n, dh = k.shape
    kd = q.shape[2]
    bk, bd = block(kd), block(dh)
    bn, warps = tiles(bk, bd, k.dtype)
    block_n = block_n or bn
    split_tiles, n_split = splits(triton.cdiv(n, block_n), b * h, k.device, split_tiles)
    split_len = split_tiles * block_n
    f32 = dict(dtype=torch.float32, device=k.device)
    pm = torch.empty(b, h, n_split, bk, **f32)
    pl = torch.empty(b, h, n_split, bk, **f32)
    pacc = torch.empty(b, h, n_split, bk, bd, **f32)
    qb = 0 if q.shape[0] == 1 else q.stride(0)
    mu = _mask_u8(mask)
    _pack_fwd_split[(b * h, n_split)](
        q, k, v, mu, pm, pl, pacc,
        qb, q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        mu.stride(0), mu.stride(1),
        h, n, kd, dh, split_len, n_split, float(scale),
        BLOCK_K=bk, BLOCK_N=block_n, BLOCK_D=bd, PREC=dot_precision(k.dtype), num_warps=warps,
    )
    return pm, pl, pacc, split_len, n_split


def _forward(q, k, v, mask, scale, block_n, split_tiles):
    b, h, n, dh = k.shape
    kd = q.shape[2]
    pm, pl, pacc, _, n_split = partial_states(q, k, v, mask, scale, block_n, split_tiles)
    out = torch.empty(b, h, kd, dh, dtype=k.dtype, device=k.device)
    lse = torch.empty(b, h, block(kd), dtype=torch.float32, device=k.device)
    _pack_combine[(b * h,)](
        pm, pl, pacc, out, lse, out.stride(0), out.stride(1), out.stride(2),
        h, kd, dh, n_split, BLOCK_K=block(kd), BLOCK_D=block(dh), BLOCK_S=block(n_split, 2),
        num_warps=4 if block(kd) * block(dh) <= 64 * 64 else 8,
    )
    return out, lse


class _PackFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, scale, block_n, split_tiles):
        out, lse = _forward(q, k, v, mask, scale, block_n, split_tiles)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.cfg = (scale, block_n, split_tiles)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, mask, out, lse = ctx.saved_tensors
        scale, block_n, split_tiles = ctx.cfg
        b, h, n, dh = k.shape
        kd = q.shape[2]
        bk, bd = block(kd), block(dh)
        bn, warps = tiles(bk, bd, k.dtype, backward=True)
        block_n = block_n or bn
        dout = _last_contig(dout.to(k.dtype))
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        split_tiles, n_split = splits(triton.cdiv(n, block_n), b * h, k.device, split_tiles)
        split_len = split_tiles * block_n
        dqp = torch.empty(b, h, n_split, bk, bd, dtype=torch.float32, device=k.device)
        qb = 0 if q.shape[0] == 1 else q.stride(0)
        mu = _mask_u8(mask)
        _pack_bwd[(b * h, n_split)](
            q, k, v, mu, out, dout, lse, dk, dv, dqp,
            qb, q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            mu.stride(0), mu.stride(1),
            out.stride(0), out.stride(1), out.stride(2), dout.stride(0), dout.stride(1), dout.stride(2),
            dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2),
            h, n, kd, dh, split_len, n_split, float(scale),
            BLOCK_K=bk, BLOCK_N=block_n, BLOCK_D=bd, PREC=dot_precision(k.dtype), num_warps=warps,
        )
        dq = dqp.sum(2)[:, :, :kd, :dh]
        if q.shape[0] == 1 and b != 1:
            dq = dq.sum(0, keepdim=True)
        return dq.to(q.dtype), dk, dv, None, None, None, None


def pack_attention(q, k, v, mask, scale: float | None = None, block_n: int | None = None, split_tiles: int | None = None):
    """Triton non-causal pack: ``q [B|1, h, k, d_h]`` over ``k, v [B, h, N, d_h]`` with
    ``mask [B, N]`` (True = real); returns ``[B, h, k, d_h]`` (zeros for all-pad rows).
    Differentiable in q, k, v.  ``block_n`` (power of two ≥ 16; default from
    :func:`~elastic_bench.elastic.kernels.tiles`) and ``split_tiles`` (tiles of ``block_n``
    keys per program; default: enough programs for ≈ 2 per SM) are for tests/tuning."""
    scale = 1.0 / math.sqrt(k.shape[-1]) if scale is None else scale
    q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
    return _PackFn.apply(q, k, v, mask, scale, block_n, split_tiles)
