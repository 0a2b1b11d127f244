"""The causal LDA scan fused with the folded unpack, as Triton kernels (``elastic-causal``).

Same signature and semantics as :func:`elastic_bench.elastic.causal.causal_lda_scan`
(q1 and q2 pre-scaled by 1/√d_h; returns the per-head unpack output ``[B, h, N, d_h]``,
padding positions included).  For source head h, dispatcher j and position t::

    pack_t^h[j]  = Σ_{s≤t, real} e^{S_js} v1_s / Σ_{s≤t, real} e^{S_js}      S_js = q1_j^h · k1_s^h   (0 before any real s)
    score_t^g[j] = q2_t^g · Ck^g[j] + Σ_h pack_t^h[j] · r_t^{h,g},            r_t^{h,g} = Gk^{h,g} q2_t^g
    a_t^g        = softmax_j score_t^g
    out_t^g      = Σ_j a_t^g[j] Cv^g[j] + Σ_h (Σ_j a_t^g[j] pack_t^h[j]) Gv^{h,g}

**Chunk algebra (no per-position dispatchers).**  The state carried per source head and
dispatcher is the online softmax's running max m, normaliser l and k×d_h accumulator acc.
For a chunk of C positions take one reference per dispatcher, M = max(m, max_s S_js),
α = e^{m-M}, E_sj = e^{S_js - M} (0 for padding) and Λ_tj = α_j l_j + Σ_{s≤t} E_sj.
With P = acc/l (the packed dispatchers at the chunk start) and R_t = r_t^{h,g}, every
per-position quantity is a C×k, C×C or C×d_h matrix product::

    Σ_h-term of score_t[j] = [α_j l_j (R Pᵀ)_tj + ((R V1ᵀ) ⊙ tril · E)_tj] / Λ_tj
    z_t^h  = Σ_j a_tj pack_t[j] = (A' ⊙ αl) P + ((A' Eᵀ) ⊙ tril) V1,    A'_tj = a_tj / Λ_tj
    state  ← (M, α l + Σ_s E_s, α acc + Eᵀ V1)

so the per-position packed dispatchers never exist, not even in registers.  The factor
e^{m_t - M} (m_t the running max at t) cancels between numerator and Λ; it is only a
range hazard: if, inside one chunk, a dispatcher's score rises by more than ``thr`` (60,
natural-log units) above the running max at an earlier position, that position's sums
would underflow.  Such a chunk is detected (a running max by ``tl.associative_scan``) and
redone position by position with the exact online update (``_fallback``, vector ops
only), so any score range stays finite, as in the PyTorch scan.

**Kernels and grids** (C = chunk, 16 or 32; a "segment" is a run of chunks):

1. ``pack._pack_fwd_split`` (scale 1), grid ``(B·h, n_seg)``: each segment's own
   (m, l, acc) summary (the non-causal pack's split kernel).
2. ``_prefix_states``, grid ``(B·h,)``: exclusive prefix over segments (online-softmax
   combine), the state at each segment's start.
3. ``_scan_fwd``, grid ``(B, h, n_seg)``: program (b, g, segment) owns output head g of one
   segment; it carries the state of every source head (fp32, in a program-private scratch
   of h·k·(d_h+2) floats that stays in L1/L2; a barrier separates every read of a slot from
   its rewrite) from chunk to chunk and writes only the outputs.  Per chunk and source
   head: ~11 tile products of C×k, C×C or C×d_h (tensor cores; fp32 operands in tf32 for
   16-bit inputs, IEEE for fp32 inputs).
   n_seg is picked so that ≈ 2 programs per SM run; with n_seg = 1 kernels 1-2 are skipped.

**Backward: recomputation per chunk** (an autograd.Function).  Under autograd the forward
kernel also writes the state at every chunk start (``h·(N/C)·k·(d_h+2)`` floats per
sequence: the same O(N/c·k·d) that the PyTorch scan's checkpointing keeps).  The backward
pass walks groups of chunks from last to first and differentiates the PyTorch chunk
function (:func:`_chunk` here: the math of :func:`elastic_bench.elastic.causal._chunk`
without dropout; in fp32, autocast off) from the saved state,
carrying the gradient of (l, acc) backwards; m is a reference the result does not depend
on, so it gets none (as in the PyTorch scan).  It costs what the PyTorch path's backward
costs; a Triton backward is future work.

Limits: d_h ≤ 64, k ≤ 64 (``MAX_TILE``; padded to powers of two ≥ 16), any N, fp16 / bf16 /
fp32, no attention dropout (the PyTorch scan runs when dropout is on).  Offsets are int32,
or int64 when any buffer (inputs, output, scratch, segment or saved states) reaches 2**31
elements (:func:`needs_int64`).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import block, dot_precision, interpret_mode, splits
from .pack import NEG, partial_states

INTERPRETED = interpret_mode()
THRESHOLD = 60.0


@triton.jit
def _round_mantissa(x, BITS: tl.constexpr):
    """fp32 ``x`` rounded to ``BITS`` mantissa bits, to nearest (ties to even): tf32 keeps 10,
    bf16 keeps 7.  A measurement aid only (``EMULATE_BITS``): it lets the CPU interpreter, which
    multiplies fp32 operands exactly, show what rounded operands cost."""
    u = x.to(tl.int32, bitcast=True)
    lsb = (u >> (23 - BITS)) & 1
    u = (u + ((1 << (22 - BITS)) - 1) + lsb) & (-(1 << (23 - BITS)))
    return u.to(tl.float32, bitcast=True)


@triton.jit
def _mm(a, b, PREC: tl.constexpr, ROUND: tl.constexpr):
    """Product of two fp32 intermediates with fp32 accumulation.  Operands: IEEE fp32 for fp32
    inputs; tf32 for 16-bit inputs (tensor cores, 10 mantissa bits like fp16 but fp32's exponent
    range, so tiny softmax weights do not flush to zero as fp16 operands would; bf16 operands,
    used before, keep only 7 bits: see docs/kernels.md for the measured errors).  ``ROUND`` > 0
    (measurement only) rounds both operands to that many mantissa bits and multiplies exactly."""
    if ROUND > 0:
        return tl.dot(_round_mantissa(a, ROUND), _round_mantissa(b, ROUND), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _index(pid, IDX64: tl.constexpr):
    """A program id as the kernel's index type (int64 when ``IDX64``, else int32)."""
    if IDX64:
        return pid.to(tl.int64)
    else:
        return pid


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _prefix_states(
    PM, PL, PACC, IM, IL, IACC, n_seg,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """State at the start of every segment from the segments' own summaries."""
    pid = tl.program_id(0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_K], NEG, tl.float32)
    l = tl.zeros([BLOCK_K], tl.float32)
    acc = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    for s in range(0, n_seg):
        i = pid * n_seg + s
        kd = (i * BLOCK_K + offs_k[:, None]) * BLOCK_D + offs_d[None, :]
        tl.store(IM + i * BLOCK_K + offs_k, m)
        tl.store(IL + i * BLOCK_K + offs_k, l)
        tl.store(IACC + kd, acc)
        m_s = tl.load(PM + i * BLOCK_K + offs_k)
        l_s = tl.load(PL + i * BLOCK_K + offs_k)
        a_s = tl.load(PACC + kd)
        m_new = tl.maximum(m, m_s)
        w0 = tl.exp(m - m_new)
        w1 = tl.exp(m_s - m_new)
        l = l * w0 + l_s * w1
        acc = acc * w0[:, None] + a_s * w1[:, None]
        m = m_new


@triton.jit
def _chunk_weights(
    Q1, K1, q1_off, k1_off, sq1k, sk1n, rows, tvalid, real, offs_k, offs_d, kvalid, dvalid, m_prev, l_prev,
    PREC: tl.constexpr,
):
    """Scores of one source head over one chunk, in [position, dispatcher] layout, and the
    chunk's reference M, rescale α, weights E = e^{S - M} and cumulative normalisers Λ."""
    q1t = tl.load(Q1 + q1_off + offs_k[None, :] * sq1k + offs_d[:, None], mask=kvalid[None, :] & dvalid[:, None], other=0.0)
    k1 = tl.load(K1 + k1_off + rows[:, None] * sk1n + offs_d[None, :], mask=tvalid[:, None] & dvalid[None, :], other=0.0)
    st = tl.dot(k1, q1t, input_precision=PREC)  # [C, BLOCK_K]
    st = tl.where(real[:, None] & kvalid[None, :], st, float("-inf"))
    m_c = tl.maximum(m_prev, tl.max(st, 0))
    alpha = tl.exp(m_prev - m_c)
    et = tl.exp(st - m_c[None, :])
    lt = tl.cumsum(et, 0) + (alpha * l_prev)[None, :]
    return st, m_c, alpha, et, lt


@triton.jit
def _fallback(
    Q1, K1, V1, MASK, Q2, GK, GV, OUT, SM, SL, SACC,
    b, g, c0, end, st_base, q1_b, ck_t, cv,
    sq1h, sq1k, sk1b, sk1h, sk1n, sv1b, sv1h, sv1n, smb, smn, sq2b, sq2h, sq2n, sob, soh, son,
    H, DH, offs_k, offs_d, kvalid, dvalid,
    C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One chunk position by position with the exact online update (vector ops only)."""
    kd_mask = kvalid[:, None] & dvalid[None, :]
    dd_mask = dvalid[:, None] & dvalid[None, :]
    for i in range(0, C):
        t = c0 + i
        if t < end:
            real_t = tl.load(MASK + b * smb + t * smn) != 0
            q2_t = tl.load(Q2 + b * sq2b + g * sq2h + t * sq2n + offs_d, mask=dvalid, other=0.0).to(tl.float32)
            sc = tl.sum(ck_t * q2_t[:, None], 0)  # [BLOCK_K]
            for hh in range(0, H):
                sp = (st_base + hh) * BLOCK_K
                m = tl.load(SM + sp + offs_k)
                l = tl.load(SL + sp + offs_k)
                acc = tl.load(SACC + (sp + offs_k[:, None]) * BLOCK_D + offs_d[None, :])
                q1 = tl.load(Q1 + q1_b + hh * sq1h + offs_k[:, None] * sq1k + offs_d[None, :], mask=kd_mask, other=0.0).to(tl.float32)
                k1_t = tl.load(K1 + b * sk1b + hh * sk1h + t * sk1n + offs_d, mask=dvalid, other=0.0).to(tl.float32)
                v1_t = tl.load(V1 + b * sv1b + hh * sv1h + t * sv1n + offs_d, mask=dvalid, other=0.0).to(tl.float32)
                s = tl.sum(q1 * k1_t[None, :], 1)
                s = tl.where(real_t & kvalid, s, float("-inf"))
                m_new = tl.maximum(m, s)
                al = tl.exp(m - m_new)
                p = tl.exp(s - m_new)
                l = al * l + p
                acc = al[:, None] * acc + p[:, None] * v1_t[None, :]
                tl.debug_barrier()  # every thread has read this slot's state before any thread rewrites it
                tl.store(SM + sp + offs_k, m_new)
                tl.store(SL + sp + offs_k, l)
                tl.store(SACC + (sp + offs_k[:, None]) * BLOCK_D + offs_d[None, :], acc)
                gk = tl.load(GK + ((hh * H + g) * DH + offs_d[:, None]) * DH + offs_d[None, :], mask=dd_mask, other=0.0).to(tl.float32)
                r = tl.sum(gk * q2_t[None, :], 1)  # r[d] = Σ_e gk[h, g, d, e] q2[e]
                packed = tl.where((l > 0)[:, None], acc / tl.where(l > 0, l, 1.0)[:, None], 0.0)
                sc += tl.sum(packed * r[None, :], 1)
            tl.debug_barrier()
            sc = tl.where(kvalid, sc, float("-inf"))
            a = tl.exp(sc - tl.max(sc, 0))
            a = a / tl.sum(a, 0)
            o = tl.sum(a[:, None] * cv, 0)  # [BLOCK_D]
            for hh in range(0, H):
                sp = (st_base + hh) * BLOCK_K
                l = tl.load(SL + sp + offs_k)
                acc = tl.load(SACC + (sp + offs_k[:, None]) * BLOCK_D + offs_d[None, :])
                packed = tl.where((l > 0)[:, None], acc / tl.where(l > 0, l, 1.0)[:, None], 0.0)
                z = tl.sum(a[:, None] * packed, 0)  # [BLOCK_D] over d
                gv = tl.load(GV + ((hh * H + g) * DH + offs_d[:, None]) * DH + offs_d[None, :], mask=dd_mask, other=0.0).to(tl.float32)
                o += tl.sum(z[:, None] * gv, 0)
            tl.store(OUT + b * sob + g * soh + t * son + offs_d, o.to(OUT.dtype.element_ty), mask=dvalid)
            tl.debug_barrier()


@triton.jit
def _scan_fwd(
    Q1, K1, V1, MASK, Q2, CK, CV, GK, GV, OUT,
    SM, SL, SACC, IM, IL, IACC, VM, VL, VACC,
    sq1b, sq1h, sq1k, sk1b, sk1h, sk1n, sv1b, sv1h, sv1n, smb, smn,
    sq2b, sq2h, sq2n, sckb, sckh, sckk, scvb, scvh, scvk, sob, soh, son,
    H, N, KD, DH, seg_len, n_seg, n_chunks, thr,
    C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr, ROUND: tl.constexpr,
    HAS_INIT: tl.constexpr, SAVE: tl.constexpr, IDX64: tl.constexpr, FALLBACK: tl.constexpr = True,
):
    # IDX64: element offsets in int64 (the program ids are widened before any stride or slot
    # count multiplies them, so every offset below, positions included, is int64); chosen by
    # needs_int64 when some buffer, the saved states included, spans 2**31 elements or more
    b = _index(tl.program_id(0), IDX64)
    g = _index(tl.program_id(1), IDX64)
    seg = _index(tl.program_id(2), IDX64)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, C)
    kvalid = offs_k < KD
    dvalid = offs_d < DH
    dd_mask = dvalid[:, None] & dvalid[None, :]
    kd_ptr = offs_k[:, None] * BLOCK_D + offs_d[None, :]
    st_base = ((b * H + g) * n_seg + seg) * H  # this program's scratch, one slot per source head
    for hh in range(0, H):
        sp = (st_base + hh) * BLOCK_K
        if HAS_INIT:
            ip = ((b * H + hh) * n_seg + seg) * BLOCK_K
            m0 = tl.load(IM + ip + offs_k)
            l0 = tl.load(IL + ip + offs_k)
            a0 = tl.load(IACC + ip * BLOCK_D + kd_ptr)
        else:
            m0 = tl.full([BLOCK_K], NEG, tl.float32)
            l0 = tl.zeros([BLOCK_K], tl.float32)
            a0 = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
        tl.store(SM + sp + offs_k, m0)
        tl.store(SL + sp + offs_k, l0)
        tl.store(SACC + sp * BLOCK_D + kd_ptr, a0)
    tl.debug_barrier()
    q1_b = b * sq1b
    ck_t = tl.load(CK + b * sckb + g * sckh + offs_k[None, :] * sckk + offs_d[:, None], mask=kvalid[None, :] & dvalid[:, None], other=0.0)
    cv = tl.load(CV + b * scvb + g * scvh + offs_k[:, None] * scvk + offs_d[None, :], mask=kvalid[:, None] & dvalid[None, :], other=0.0)
    cv32 = cv.to(tl.float32)
    tri = offs_c[:, None] >= offs_c[None, :]  # [t, s]: s ≤ t
    start = seg * seg_len
    end = tl.minimum(start + seg_len, N)
    for c0 in range(start, end, C):
        rows = c0 + offs_c
        tvalid = rows < end
        real = tl.load(MASK + b * smb + rows * smn, mask=tvalid, other=0) != 0
        q2 = tl.load(Q2 + b * sq2b + g * sq2h + rows[:, None] * sq2n + offs_d[None, :], mask=tvalid[:, None] & dvalid[None, :], other=0.0)
        if SAVE:
            if g == 0:
                ci = c0 // C
                for hh in range(0, H):
                    sp = (st_base + hh) * BLOCK_K
                    vp = ((b * H + hh) * n_chunks + ci) * BLOCK_K
                    tl.store(VM + vp + offs_k, tl.load(SM + sp + offs_k))
                    tl.store(VL + vp + offs_k, tl.load(SL + sp + offs_k))
                    tl.store(VACC + vp * BLOCK_D + kd_ptr, tl.load(SACC + sp * BLOCK_D + kd_ptr))
        # ---- pass 1: unpack scores over every source head's cumulative pack
        scores = tl.dot(q2, ck_t, input_precision=PREC)  # [C, BLOCK_K]
        n_bad = 0
        for hh in range(0, H):
            sp = (st_base + hh) * BLOCK_K
            m_prev = tl.load(SM + sp + offs_k)
            l_prev = tl.load(SL + sp + offs_k)
            acc_prev = tl.load(SACC + sp * BLOCK_D + kd_ptr)
            st, m_c, alpha, et, lt = _chunk_weights(
                Q1, K1, q1_b + hh * sq1h, b * sk1b + hh * sk1h, sq1k, sk1n, rows, tvalid, real,
                offs_k, offs_d, kvalid, dvalid, m_prev, l_prev, PREC,
            )
            m_t = tl.maximum(m_prev[None, :], tl.associative_scan(st, 0, _max_combine))
            bad = (m_t > NEG * 0.5) & (m_t < m_c[None, :] - thr)
            n_bad += tl.sum(tl.sum(bad.to(tl.int32), 1), 0)
            gk_t = tl.load(GK + ((hh * H + g) * DH + offs_d[None, :]) * DH + offs_d[:, None], mask=dd_mask, other=0.0)
            r = tl.dot(q2, gk_t, input_precision=PREC)  # [C, BLOCK_D]: r_t[d] = Σ_e gk[h, g, d, e] q2_t[e]
            packed = tl.where((l_prev > 0)[:, None], acc_prev / tl.where(l_prev > 0, l_prev, 1.0)[:, None], 0.0)
            term = _mm(r, tl.trans(packed), PREC, ROUND) * (alpha * l_prev)[None, :]
            v1 = tl.load(V1 + b * sv1b + hh * sv1h + rows[:, None] * sv1n + offs_d[None, :], mask=tvalid[:, None] & dvalid[None, :], other=0.0).to(tl.float32)
            w = tl.where(tri, _mm(r, tl.trans(v1), PREC, ROUND), 0.0)  # [t, s] = r_t · v1_s
            term += _mm(w, et, PREC, ROUND)
            scores += tl.where(lt > 0, term / tl.where(lt > 0, lt, 1.0), 0.0)
        scores = tl.where(kvalid[None, :], scores, float("-inf"))
        tl.debug_barrier()
        if FALLBACK and n_bad > 0:
            _fallback(
                Q1, K1, V1, MASK, Q2, GK, GV, OUT, SM, SL, SACC,
                b, g, c0, end, st_base, q1_b, ck_t.to(tl.float32), cv32,
                sq1h, sq1k, sk1b, sk1h, sk1n, sv1b, sv1h, sv1n, smb, smn, sq2b, sq2h, sq2n, sob, soh, son,
                H, DH, offs_k, offs_d, kvalid, dvalid, C, BLOCK_K, BLOCK_D,
            )
        else:
            # ---- pass 2: outputs, then the state at the chunk's end
            a = tl.exp(scores - tl.max(scores, 1)[:, None])
            a = a / tl.sum(a, 1)[:, None]
            out = _mm(a, cv32, PREC, ROUND)  # [C, BLOCK_D]
            for hh in range(0, H):
                sp = (st_base + hh) * BLOCK_K
                m_prev = tl.load(SM + sp + offs_k)
                l_prev = tl.load(SL + sp + offs_k)
                acc_prev = tl.load(SACC + sp * BLOCK_D + kd_ptr)
                st, m_c, alpha, et, lt = _chunk_weights(
                    Q1, K1, q1_b + hh * sq1h, b * sk1b + hh * sk1h, sq1k, sk1n, rows, tvalid, real,
                    offs_k, offs_d, kvalid, dvalid, m_prev, l_prev, PREC,
                )
                packed = tl.where((l_prev > 0)[:, None], acc_prev / tl.where(l_prev > 0, l_prev, 1.0)[:, None], 0.0)
                a_l = tl.where(lt > 0, a / tl.where(lt > 0, lt, 1.0), 0.0)  # [C, BLOCK_K]
                z = _mm(a_l * (alpha * l_prev)[None, :], packed, PREC, ROUND)  # [C, BLOCK_D]
                x = tl.where(tri, _mm(a_l, tl.trans(et), PREC, ROUND), 0.0)  # [t, s]
                v1 = tl.load(V1 + b * sv1b + hh * sv1h + rows[:, None] * sv1n + offs_d[None, :], mask=tvalid[:, None] & dvalid[None, :], other=0.0).to(tl.float32)
                z += _mm(x, v1, PREC, ROUND)
                gv = tl.load(GV + ((hh * H + g) * DH + offs_d[:, None]) * DH + offs_d[None, :], mask=dd_mask, other=0.0).to(tl.float32)
                out += _mm(z, gv, PREC, ROUND)
                tl.debug_barrier()  # every thread has read this slot's state before any thread rewrites it
                tl.store(SM + sp + offs_k, m_c)
                tl.store(SL + sp + offs_k, alpha * l_prev + tl.sum(et, 0))
                tl.store(SACC + sp * BLOCK_D + kd_ptr, alpha[:, None] * acc_prev + _mm(tl.trans(et), v1, PREC, ROUND))
            tl.store(OUT + b * sob + g * soh + rows[:, None] * son + offs_d[None, :], out.to(OUT.dtype.element_ty),
                     mask=tvalid[:, None] & dvalid[None, :])
        tl.debug_barrier()


MAX_TILE = 64  # k and d_h: at 128 the sm_90 build spills ~2 KB per thread and needs 196 KB of shared memory
INT32_LIMIT = 2**31  # element offsets at or beyond this need the kernel's int64 variant
FORCE_INT64 = False  # tests: run the int64 variant whatever the sizes
EMULATE_BITS = 0  # measurement only: round the operands of the fp32-intermediate products to this many mantissa bits


def _extent(shape, stride) -> int:
    """One past the largest element offset a strided tensor reaches (0 if it is empty)."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((s - 1) * abs(st) for s, st in zip(shape, stride))


def index_extents(tensors: dict[str, torch.Tensor], b: int, h: int, n: int, dh: int, kd: int, c: int, n_seg: int, save: bool) -> dict[str, int]:
    """Element extent of every buffer the scan's kernels index: the inputs and the output as
    strided (``tensors``, by name; meta tensors do: nothing is read), the per-program scratch,
    the segment summaries and starting states, and the per-chunk states saved for the backward."""
    bk, bd = block(kd), block(dh)
    ext = {name: _extent(t.shape, t.stride()) for name, t in tensors.items()}
    ext["out"] = b * n * h * dh
    ext["scratch"] = b * h * n_seg * h * bk * bd
    ext["segment states"] = b * h * n_seg * bk * bd if n_seg > 1 else 0
    ext["saved states"] = b * h * triton.cdiv(n, c) * bk * bd if save else 0
    return ext


def needs_int64(extents: dict[str, int]) -> bool:
    """Whether any buffer reaches element offset 2**31 (int32 offsets would wrap)."""
    return FORCE_INT64 or max(extents.values()) >= INT32_LIMIT


def kernel_chunk(chunk_size: int) -> int:
    """The kernel's chunk for a requested ``chunk_size``: 16 or 32 (the result does not depend on it)."""
    return min(32, block(chunk_size, 16))


def _bstride(t: torch.Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.stride(0)


def _contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(q1, k1, v1, mask, q2, ck, cv, gk, gv, c, seg_chunks=None, save=False):
    b, h, n, dh = k1.shape
    kd = q1.shape[2]
    bk, bd = block(kd), block(dh)
    dev = k1.device
    f32 = dict(dtype=torch.float32, device=dev)
    n_chunks = triton.cdiv(n, c)
    seg_chunks, n_seg = splits(n_chunks, b * h, dev, seg_chunks)
    named = dict(q1=q1, k1=k1, v1=v1, mask=mask, q2=q2, ck=ck, cv=cv, gk=gk, gv=gv)
    idx64 = needs_int64(index_extents(named, b, h, n, dh, kd, c, n_seg, save))
    seg_len = seg_chunks * c
    mu = mask.view(torch.uint8) if mask.dtype == torch.bool else mask.to(torch.uint8)
    if n_seg > 1:
        pm, pl, pacc, split_len, n_split = partial_states(q1, k1, v1, mask, 1.0, block_n=c, split_tiles=seg_chunks)
        assert (split_len, n_split) == (seg_len, n_seg)
        im, il, iacc = torch.empty_like(pm), torch.empty_like(pl), torch.empty_like(pacc)
        _prefix_states[(b * h,)](pm, pl, pacc, im, il, iacc, n_seg, BLOCK_K=bk, BLOCK_D=bd)
    else:
        im = il = iacc = torch.empty(1, **f32)
    sm = torch.empty(b, h, n_seg, h, bk, **f32)
    sl = torch.empty_like(sm)
    sacc = torch.empty(b, h, n_seg, h, bk, bd, **f32)
    if save:
        vm = torch.empty(b, h, n_chunks, bk, **f32)
        vl = torch.empty_like(vm)
        vacc = torch.empty(b, h, n_chunks, bk, bd, **f32)
    else:
        vm = vl = vacc = torch.empty(1, **f32)
    out = torch.empty(b, n, h, dh, dtype=k1.dtype, device=dev).transpose(1, 2)
    _scan_fwd[(b, h, n_seg)](
        q1, k1, v1, mu, q2, ck, cv, gk, gv, out,
        sm, sl, sacc, im, il, iacc, vm, vl, vacc,
        _bstride(q1), q1.stride(1), q1.stride(2), k1.stride(0), k1.stride(1), k1.stride(2), v1.stride(0), v1.stride(1), v1.stride(2),
        mu.stride(0), mu.stride(1),
        q2.stride(0), q2.stride(1), q2.stride(2), _bstride(ck), ck.stride(1), ck.stride(2), _bstride(cv), cv.stride(1), cv.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        h, n, kd, dh, seg_len, n_seg, n_chunks, THRESHOLD,
        C=c, BLOCK_K=bk, BLOCK_D=bd, PREC=dot_precision(k1.dtype), ROUND=EMULATE_BITS,
        HAS_INIT=n_seg > 1, SAVE=save, IDX64=idx64, num_warps=8, num_stages=1,
    )
    return out, (vm, vl, vacc)


def backward_group(b: int, h: int, k: int, c: int, n: int) -> int:
    """Chunks of the backward recomputation: a multiple of the kernel chunk ``c`` whose
    [B, h, k, c_b, c_b] intermediates stay near 8M elements."""
    r = max(1, int(math.sqrt((1 << 23) / max(1, b * h * k))) // c)
    return min(r * c, triton.cdiv(n, c) * c)


def _chunk(q1, k1, v1, mask, q2, ck, cv, gk, gv, m, l, acc):
    """The PyTorch chunk step of :func:`elastic_bench.elastic.causal._chunk` without dropout
    (same math, same per-position references), differentiated by the backward pass.  Its
    gradient stays finite, as the PyTorch scan's does: the causal mask is applied before
    ``exp`` (future scores far above the running max would overflow to inf, and a zero
    gradient times inf is NaN), and positions with no real token yet divide by 1."""
    c = k1.shape[2]
    s = torch.einsum("bhkd,bhcd->bhkc", q1, k1).masked_fill(~mask[:, None, None, :], float("-inf"))
    m_t = torch.maximum(m[..., None], torch.cummax(s.detach(), dim=-1).values)
    ref = torch.where(torch.isfinite(m_t), m_t, torch.zeros_like(m_t))
    tri = torch.ones(c, c, dtype=torch.bool, device=s.device).tril()
    w = torch.exp((s[..., None, :] - ref[..., :, None]).masked_fill(~tri, float("-inf")))  # [B,h,k,t,s]
    decay = torch.exp(m[..., None] - ref)
    l_t = decay * l[..., None] + w.sum(-1)
    acc_t = decay[..., None] * acc[..., None, :] + torch.einsum("bhkts,bhsd->bhktd", w, v1)
    packed = acc_t / torch.where(l_t > 0, l_t, torch.ones_like(l_t))[..., None]
    r = torch.einsum("hgde,bgce->bhgcd", gk, q2)
    b = q2.shape[0]
    scores = torch.einsum("bgcd,bgkd->bgck", q2, ck.expand(b, -1, -1, -1)) + torch.einsum("bhkcd,bhgcd->bgck", packed, r)
    a = torch.softmax(scores, dim=-1)
    z = torch.einsum("bgck,bhkcd->bhgcd", a, packed)
    out = torch.einsum("bgck,bgkd->bgcd", a, cv.expand(b, -1, -1, -1)) + torch.einsum("bhgcd,hgde->bgce", z, gv)
    return out, m_t[..., -1], l_t[..., -1], acc_t[..., -1, :]


class _ScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q1, k1, v1, mask, q2, ck, cv, gk, gv, c, seg_chunks, grad_enabled):
        # needs_input_grad says True under no_grad too (grad mode is off inside forward):
        # the caller's grad mode decides whether a backward can follow
        save = grad_enabled and any(ctx.needs_input_grad)
        out, states = _launch(q1, k1, v1, mask, q2, ck, cv, gk, gv, c, seg_chunks, save)
        if save:
            ctx.save_for_backward(q1, k1, v1, mask, q2, ck, cv, gk, gv, *states)
            ctx.c = c
        return out

    @staticmethod
    def backward(ctx, gout):
        q1, k1, v1, mask, q2, ck, cv, gk, gv, vm, vl, vacc = ctx.saved_tensors
        c = ctx.c
        b, h, n, dh = k1.shape
        kd = q1.shape[2]
        f = torch.float32
        shared = [t.detach().to(f).requires_grad_() for t in (q1, ck, cv, gk, gv)]
        g_shared = [torch.zeros_like(t) for t in shared]
        dk1 = torch.empty(b, h, n, dh, dtype=k1.dtype, device=k1.device)
        dv1 = torch.empty_like(dk1)
        dq2 = torch.empty_like(dk1)
        g_l = torch.zeros(b, h, kd, dtype=f, device=k1.device)
        g_acc = torch.zeros(b, h, kd, dh, dtype=f, device=k1.device)
        cb = backward_group(b, h, kd, c, n)
        # the recomputation is fp32 whatever autocast the caller's backward runs under
        # (loss.backward() inside torch.autocast would otherwise redo _chunk's products in 16 bits)
        with torch.autocast(k1.device.type, enabled=False):
            for st in reversed(range(0, n, cb)):
                g_l, g_acc = _backward_group(
                    st, min(st + cb, n), c, n, q1, k1, v1, mask, q2, vm, vl, vacc, gout, shared, g_shared, dk1, dv1, dq2, g_l, g_acc
                )
        gq1, gck, gcv, ggk, ggv = (gr.to(t.dtype) for gr, t in zip(g_shared, (q1, ck, cv, gk, gv)))
        return gq1, dk1, dv1, None, dq2, gck, gcv, ggk, ggv, None, None, None


def _backward_group(st, en, c, n, q1, k1, v1, mask, q2, vm, vl, vacc, gout, shared, g_shared, dk1, dv1, dq2, g_l, g_acc):
    """Gradients of positions [st, en) from the state saved at chunk st // c: writes dk1, dv1,
    dq2 there, adds into ``g_shared`` (q1, ck, cv, gk, gv in fp32) and returns the gradient
    of the state (l, acc) at st, given that of the state at en (``g_l``, ``g_acc``)."""
    f = torch.float32
    kd, dh = q1.shape[2], k1.shape[3]
    ci = st // c
    l_in = vl[:, :, ci, :kd].clone().requires_grad_()
    acc_in = vacc[:, :, ci, :kd, :dh].clone().requires_grad_()
    m_in = torch.where(l_in.detach() > 0, vm[:, :, ci, :kd], torch.full_like(l_in, float("-inf"))).detach()
    k1c, v1c, q2c = (t[:, :, st:en].detach().to(f).requires_grad_() for t in (k1, v1, q2))
    with torch.enable_grad():
        out, _, l_o, acc_o = _chunk(shared[0], k1c, v1c, mask[:, st:en], q2c, *shared[1:], m_in, l_in, acc_in)
    outs, gouts = [out], [gout[:, :, st:en].to(f)]
    if en < n:
        outs += [l_o, acc_o]
        gouts += [g_l, g_acc]
    grads = torch.autograd.grad(outs, [k1c, v1c, q2c, *shared, l_in, acc_in], gouts, allow_unused=True)
    for dst, gr in zip((dk1, dv1, dq2), grads[:3]):
        dst[:, :, st:en] = gr if gr is not None else 0
    for acc_g, gr in zip(g_shared, grads[3:8]):
        if gr is not None:
            acc_g += gr
    g_l = grads[8] if grads[8] is not None else torch.zeros_like(g_l)
    g_acc = grads[9] if grads[9] is not None else torch.zeros_like(g_acc)
    return g_l, g_acc


def causal_lda_scan(q1, k1, v1, mask, q2, ck, cv, gk, gv, chunk_size: int = 32, dropout_p: float = 0.0, seg_chunks: int | None = None):
    """Triton version of :func:`elastic_bench.elastic.causal.causal_lda_scan` (same arguments and
    result; ``dropout_p`` must be 0).  ``seg_chunks`` (chunks per program) is for tests/tuning."""
    if dropout_p:
        raise ValueError("the Triton causal scan has no attention dropout; use the PyTorch scan")
    if max(q1.shape[2], k1.shape[3]) > MAX_TILE:
        raise ValueError(f"the Triton causal scan takes k, d_h <= {MAX_TILE}; got k={q1.shape[2]}, d_h={k1.shape[3]}")
    c = kernel_chunk(chunk_size)
    q1, k1, v1, q2, ck, cv = (_contig(t) for t in (q1, k1, v1, q2, ck, cv))
    gk, gv = gk.contiguous(), gv.contiguous()
    return _ScanFn.apply(q1, k1, v1, mask, q2, ck, cv, gk, gv, c, seg_chunks, torch.is_grad_enabled())
