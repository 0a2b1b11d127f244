"""Non-causal unpack as a Triton kernel: N sequence queries over the k dispatchers.

Math (per batch row b, head h; σ = ``scale``, default 1/√d_h; no mask: every query reads
all k dispatchers, padding positions included, exactly as
:func:`elastic_bench.elastic.lda.unpack`)::

    S_tj  = σ · q_t · k_j,     A_t = softmax_j(S_t),     out_t = Σ_j A_tj v_j

Forward: ``_unpack_fwd``, grid ``(B·h, n_split)``.  The k×d_h dispatcher keys and values
(``[BLOCK_K, BLOCK_D]`` each) are loaded once per program and stay on chip; the program
then makes one pass over its slice of the sequence, ``BLOCK_N`` queries at a time: scores,
a complete softmax over the k columns (no online rescaling: all k fit one tile), product
with V, store.  Nothing but the output is written.

Backward (a Triton backward): ``_unpack_bwd``, same grid.  Per query tile it recomputes
``A`` (cheaper than storing it), writes ``dQ = σ dS K`` with ``dS = A ⊙ (dO Vᵀ - δ)``,
``δ_t = Σ_j A_tj (dO Vᵀ)_tj`` (= dO_t · out_t), and accumulates ``dK = σ dSᵀ Q`` and
``dV = Aᵀ dO`` on chip; the n_split partial dK, dV (fp32) are summed by PyTorch (and over
the batch when the dispatchers are shared, ``k, v [1, h, k, d_h]``).

The output is allocated as ``[B, N, h, d_h]`` and returned as a ``[B, h, N, d_h]`` view, so
merging the heads afterwards (``transpose(1, 2).reshape``) copies nothing.

Limits: d_h ≤ 128, k ≤ 128 (padded to powers of two ≥ 16 and masked), any N,
fp16 / bf16 / fp32, no attention dropout.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import block, dot_precision, interpret_mode, splits, tiles

INTERPRETED = interpret_mode()


@triton.jit
def _unpack_fwd(
    Q, K, V, O,
    sqb, sqh, sqn, skb, skh, skk, svb, svh, svk, sob, soh, son,
    H, N, KD, DH, split_len, scale,
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
    kt = tl.load(K + b * skb + h * skh + offs_k[None, :] * skk + offs_d[:, None], mask=kvalid[None, :] & dvalid[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_k[:, None] * svk + offs_d[None, :], mask=kvalid[:, None] & dvalid[None, :], other=0.0)
    start = pid_s * split_len
    end = tl.minimum(start + split_len, N)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        nd_mask = (rows < end)[:, None] & dvalid[None, :]
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + offs_d[None, :], mask=nd_mask, other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * scale
        s = tl.where(kvalid[None, :], s, float("-inf"))
        p = tl.exp(s - tl.max(s, 1)[:, None])
        l = tl.sum(p, 1)
        o = tl.dot(p.to(v.dtype), v, input_precision=PREC) / l[:, None]
        tl.store(O + b * sob + h * soh + rows[:, None] * son + offs_d[None, :], o.to(O.dtype.element_ty), mask=nd_mask)


@triton.jit
def _unpack_bwd(
    Q, K, V, DO, DQ, DKP, DVP,
    sqb, sqh, sqn, skb, skh, skk, svb, svh, svk, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
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
    kd_mask = kvalid[:, None] & dvalid[None, :]
    k = tl.load(K + b * skb + h * skh + offs_k[:, None] * skk + offs_d[None, :], mask=kd_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_k[:, None] * svk + offs_d[None, :], mask=kd_mask, other=0.0)
    dk = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    start = pid_s * split_len
    end = tl.minimum(start + split_len, N)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        nd_mask = (rows < end)[:, None] & dvalid[None, :]
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + offs_d[None, :], mask=nd_mask, other=0.0)
        do = tl.load(DO + b * sdob + h * sdoh + rows[:, None] * sdon + offs_d[None, :], mask=nd_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        s = tl.where(kvalid[None, :], s, float("-inf"))
        p = tl.exp(s - tl.max(s, 1)[:, None])
        p = p / tl.sum(p, 1)[:, None]  # [BLOCK_N, BLOCK_K]
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - tl.sum(p * dp, 1)[:, None])
        dq = tl.dot(ds.to(k.dtype), k, input_precision=PREC) * scale
        tl.store(DQ + b * sdqb + h * sdqh + rows[:, None] * sdqn + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=nd_mask)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PREC)
    base = pid_bh.to(tl.int64) * n_split + pid_s
    ptrs = (base * BLOCK_K + offs_k[:, None]) * BLOCK_D + offs_d[None, :]
    tl.store(DKP + ptrs, dk * scale)
    tl.store(DVP + ptrs, dv)


def _last_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _bstride(t: torch.Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.stride(0)


def _grid(q, kd, block_n, split_tiles, backward=False):
    b, h, n, dh = q.shape
    bn, warps = tiles(block(kd), block(dh), q.dtype, backward)
    block_n = block_n or bn
    split_tiles, n_split = splits(triton.cdiv(n, block_n), b * h, q.device, split_tiles)
    return block_n, split_tiles * block_n, n_split, warps


class _UnpackFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, block_n, split_tiles):
        b, h, n, dh = q.shape
        kd = k.shape[2]
        out = torch.empty(b, n, h, dh, dtype=q.dtype, device=q.device).transpose(1, 2)
        bn, split_len, n_split, warps = _grid(q, kd, block_n, split_tiles)
        _unpack_fwd[(b * h, n_split)](
            q, k, v, out,
            q.stride(0), q.stride(1), q.stride(2), _bstride(k), k.stride(1), k.stride(2), _bstride(v), v.stride(1), v.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            h, n, kd, dh, split_len, float(scale),
            BLOCK_K=block(kd), BLOCK_N=bn, BLOCK_D=block(dh), PREC=dot_precision(q.dtype), num_warps=warps,
        )
        ctx.save_for_backward(q, k, v)
        ctx.cfg = (scale, block_n, split_tiles)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        scale, block_n, split_tiles = ctx.cfg
        b, h, n, dh = q.shape
        kd = k.shape[2]
        bk, bd = block(kd), block(dh)
        dout = _last_contig(dout.to(q.dtype))
        dq = torch.empty(b, n, h, dh, dtype=q.dtype, device=q.device).transpose(1, 2)
        bn, split_len, n_split, warps = _grid(q, kd, block_n, split_tiles, backward=True)
        dkp = torch.empty(b, h, n_split, bk, bd, dtype=torch.float32, device=q.device)
        dvp = torch.empty_like(dkp)
        _unpack_bwd[(b * h, n_split)](
            q, k, v, dout, dq, dkp, dvp,
            q.stride(0), q.stride(1), q.stride(2), _bstride(k), k.stride(1), k.stride(2), _bstride(v), v.stride(1), v.stride(2),
            dout.stride(0), dout.stride(1), dout.stride(2), dq.stride(0), dq.stride(1), dq.stride(2),
            h, n, kd, dh, split_len, n_split, float(scale),
            BLOCK_K=bk, BLOCK_N=bn, BLOCK_D=bd, PREC=dot_precision(q.dtype), num_warps=warps,
        )
        dk = dkp.sum(2)[:, :, :kd, :dh]
        dv = dvp.sum(2)[:, :, :kd, :dh]
        if k.shape[0] == 1 and b != 1:
            dk = dk.sum(0, keepdim=True)
        if v.shape[0] == 1 and b != 1:
            dv = dv.sum(0, keepdim=True)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def unpack_attention(q, k, v, scale: float | None = None, block_n: int | None = None, split_tiles: int | None = None):
    """Triton non-causal unpack: ``q [B, h, N, d_h]`` over ``k, v [B|1, h, k, d_h]``; returns
    ``[B, h, N, d_h]`` (a view of ``[B, N, h, d_h]`` storage).  Differentiable in q, k, v."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
    return _UnpackFn.apply(q, k, v, scale, block_n, split_tiles)
