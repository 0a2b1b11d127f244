"""Product-key top-k of IMR (ELASTIC_SPEC.md §2) in one Triton launch.

Math (per user b; q = [q₁; q₂] ∈ R^{2·d_half}, sub-key tables K₁, K₂ ∈ R^{n × d_half})::

    s₁ = K₁ q₁,  s₂ = K₂ q₂                         (n scores each)
    (v₁, i₁) = top-t(s₁),  (v₂, i₂) = top-t(s₂)
    c_ab = v₁[a] + v₂[b]                              (t × t candidates)
    (score, (a, b)) = top-k(c)  ->  slot = i₁[a]·n + i₂[b]                best first

Kernel ``_pk_topk``, grid ``(B,)``: one program per user does all of it on chip: the two
scorings (fp32 products over ``BLOCK_E``-wide column slices of the sub-key tables, which
stay in L2 across programs), the two top-t and the final top-k by t (resp. k) rounds of
arg-max-and-remove over the n (resp. t²) candidates (ties: the lower index first), and
writes the slot indices (and the two sub-indices) of the k winners.  Cost per user
O(n·d_half + (n + k)·t) comparisons, independent of M = n².

Forward only.  Gradients are kept by re-scoring the chosen slots in PyTorch,
differentiably: ``score_j = q₁ · K₁[i₁_j] + q₂ · K₂[i₂_j]`` (:func:`product_key_retrieve`),
which reaches q, K₁ and K₂ exactly as the PyTorch path's gathered top-k values do.

Limits: n ≤ 4096 (memory ≤ 16M slots), t ≤ 128 (candidate tile t² ≤ 16384), fp16 / bf16 /
fp32 queries and keys, scored in fp32 (:class:`ProductKeyMemory` routes in fp32 and hands
the kernel fp32 queries and keys whatever the model's dtype).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import block, interpret_mode

INTERPRETED = interpret_mode()
MAX_SIDE = 4096
MAX_TOPK = 128


@triton.jit
def _pk_topk(
    Q, K1, K2, IDX, I1, I2,
    sqb, sk1n, sk2n, n, half, topk, experts,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
    offs_e = tl.arange(0, BLOCK_E)
    offs_t = tl.arange(0, BLOCK_T)
    nvalid = offs_n < n
    s1 = tl.zeros([BLOCK_N], tl.float32)
    s2 = tl.zeros([BLOCK_N], tl.float32)
    for e0 in range(0, half, BLOCK_E):
        cols = e0 + offs_e
        evalid = cols < half
        q1 = tl.load(Q + b * sqb + cols, mask=evalid, other=0.0).to(tl.float32)
        q2 = tl.load(Q + b * sqb + half + cols, mask=evalid, other=0.0).to(tl.float32)
        m2 = nvalid[:, None] & evalid[None, :]
        k1 = tl.load(K1 + offs_n[:, None] * sk1n + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        s1 += tl.sum(k1 * q1[None, :], 1)
        k2 = tl.load(K2 + offs_n[:, None] * sk2n + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        s2 += tl.sum(k2 * q2[None, :], 1)
    s1 = tl.where(nvalid, s1, float("-inf"))
    s2 = tl.where(nvalid, s2, float("-inf"))
    v1 = tl.full([BLOCK_T], float("-inf"), tl.float32)
    v2 = tl.full([BLOCK_T], float("-inf"), tl.float32)
    i1 = tl.zeros([BLOCK_T], tl.int32)
    i2 = tl.zeros([BLOCK_T], tl.int32)
    for it in range(0, topk):
        mx1, ix1 = tl.max(s1, 0, return_indices=True, return_indices_tie_break_left=True)
        v1 = tl.where(offs_t == it, mx1, v1)
        i1 = tl.where(offs_t == it, ix1, i1)
        s1 = tl.where(offs_n == ix1, float("-inf"), s1)
        mx2, ix2 = tl.max(s2, 0, return_indices=True, return_indices_tie_break_left=True)
        v2 = tl.where(offs_t == it, mx2, v2)
        i2 = tl.where(offs_t == it, ix2, i2)
        s2 = tl.where(offs_n == ix2, float("-inf"), s2)
    cand = tl.reshape(v1[:, None] + v2[None, :], [BLOCK_T * BLOCK_T])  # -inf outside the t×t block
    offs_f = tl.arange(0, BLOCK_T * BLOCK_T)
    for it in range(0, experts):
        mx, f = tl.max(cand, 0, return_indices=True, return_indices_tie_break_left=True)
        a = f // BLOCK_T
        c = f % BLOCK_T
        j1 = tl.sum(tl.where(offs_t == a, i1, 0), 0)
        j2 = tl.sum(tl.where(offs_t == c, i2, 0), 0)
        tl.store(IDX + b * experts + it, j1.to(tl.int64) * n + j2)
        tl.store(I1 + b * experts + it, j1.to(tl.int64))
        tl.store(I2 + b * experts + it, j2.to(tl.int64))
        cand = tl.where(offs_f == f, float("-inf"), cand)


def product_key_topk(q: torch.Tensor, keys1: torch.Tensor, keys2: torch.Tensor, topk: int, experts: int):
    """Indices only: ``(slot [B, k], i1 [B, k], i2 [B, k])`` (int64, best first)."""
    b = q.shape[0]
    n, half = keys1.shape
    if n > MAX_SIDE or topk > MAX_TOPK:
        raise ValueError(f"product-key kernel: n={n} (≤ {MAX_SIDE}) and topk={topk} (≤ {MAX_TOPK})")
    q = q if q.stride(-1) == 1 else q.contiguous()
    keys1 = keys1 if keys1.stride(-1) == 1 else keys1.contiguous()
    keys2 = keys2 if keys2.stride(-1) == 1 else keys2.contiguous()
    idx = torch.empty(b, experts, dtype=torch.int64, device=q.device)
    i1 = torch.empty_like(idx)
    i2 = torch.empty_like(idx)
    bn = block(n, 16)
    be = max(1, min(block(half, 1), 8192 // bn))  # ≤ 8k elements per key slice in registers
    bt = block(topk, 16)
    _pk_topk[(b,)](
        q, keys1, keys2, idx, i1, i2, q.stride(0), keys1.stride(0), keys2.stride(0), n, half, topk, experts,
        BLOCK_N=bn, BLOCK_E=be, BLOCK_T=bt, num_warps=4 if bn * be <= 4096 and bt <= 32 else 8,
    )
    return idx, i1, i2


def product_key_retrieve(q: torch.Tensor, keys1: torch.Tensor, keys2: torch.Tensor, topk: int, experts: int):
    """``(scores [B, k], slots [B, k])`` like :meth:`ProductKeyMemory.retrieve`; the scores are
    recomputed from the chosen sub-keys in PyTorch, so they carry gradients to q, K₁ and K₂."""
    half = keys1.shape[1]
    idx, i1, i2 = product_key_topk(q.detach(), keys1.detach(), keys2.detach(), topk, experts)
    scores = (q[:, None, :half] * keys1[i1]).sum(-1) + (q[:, None, half:] * keys2[i2]).sum(-1)
    return scores, idx
