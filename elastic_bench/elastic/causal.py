"""Causal LDA as a chunk-parallel scan (the PyTorch path of ``elastic-causal``).

For every dispatcher j and source head h, position t packs only positions s ≤ t::

    pack_t^h[j] = Σ_{s≤t} e^{S_sj} v1_s / Σ_{s≤t} e^{S_sj},      S_sj = q1_j · k1_s   (padding: S = -inf)

and the unpack step of output head g reads the per-position dispatchers
P_t = P + o1(pack_t) through folded weights (:meth:`LDALayer.folded_unpack_weights`)::

    score_t^g[j] = q2_t^g · Ck^g[j] + Σ_h pack_t^h[j] · r_t^{h,g},      r_t^{h,g} = Gk^{h,g} q2_t^g
    out_t^g      = Σ_j a_t^g[j] Cv^g[j] + Σ_h (Σ_j a_t^g[j] pack_t^h[j]) Gv^{h,g},   a_t^g = softmax_j score_t^g

**The scan** (:func:`causal_lda_scan`).  The sequence is cut into chunks of c positions
and every chunk is computed at once (no Python loop over chunks):

1. Per chunk, the running max at its end, M = max(m⁰, max_s S_s) (a ``cummax`` over chunk
   maxima), at its start, m⁰, and μ, the running max at its first real position (m_t is
   non-decreasing, so μ is the smallest finite m_t of the chunk).  μ is the chunk's
   reference: E_sj = e^{S_sj - μ_j}.
2. Chunk-start states (m⁰, l⁰, acc⁰), relative to m⁰: an exclusive prefix over chunks of
   (max, Σ e, Σ e·v1) combined the online-softmax way; the combine is associative, so
   it is log2(#chunks) doubling steps over all chunks together (:func:`_prefix_states`).
3. Inside a chunk, with α_j = e^{m⁰_j - μ_j} ≤ 1 and the normaliser
   Λ'_tj = α_j l⁰_j + Σ_{s≤t} E_sj, the folded unpack is contracted from E, v1 and the
   chunk-start state (c×c, c×k and c×d_h matrix products; the per-position dispatchers
   are never built)::

       score_t^g[j] += [ ((r^{h,g} v1ᵀ) ⊙ tril · E)_tj + α_j acc⁰_j · r_t^{h,g} ] / Λ'_tj
       z_t^{h,g}     = ((Ã Eᵀ) ⊙ tril) v1 + (Ã ⊙ α) acc⁰,       Ã_tj = a_tj / Λ'_tj
       out_t^g       = a_t Cv^g + Σ_h z_t^{h,g} Gv^{h,g}

   The factor e^{μ - m_t} that relates these to the exact per-position reference m_t
   cancels between numerator and normaliser, so the result is exact.  Λ'_tj ≥ 1 once a
   real token is in (0 before: divided by 1), and E ≤ e^{M - μ}.  When, inside one chunk,
   a dispatcher's running max rises by more than :data:`THRESHOLD` (30 nats) above μ, E
   could overflow and, in fp32, the normaliser's derivative 1/Λ'² would lose precision
   (it leaves the normal range beyond ~43), so such chunks are redone with the
   per-position reference (weights W_tsj = e^{S_sj - m_tj}·[s ≤ t], decay
   β_tj = e^{m⁰_j - m_tj}, every exponent ≤ 0; :func:`_exact_chunks`).  Any score range
   stays finite; realistic scores rarely take this path, and it costs only those chunks.

Cost O(N·h²·c·(k + d_h) + N·h²·k·d_h) per layer.  Memory: beyond the inputs, tensors of
O(N·h²·(c + k)) elements and chunk-start states of O((N/c)·k·d_h); chunks are grouped
so that one group's working set stays under :data:`GROUP_BUDGET` elements (a Python loop
over groups, one group for the usual shapes), and under autograd every group is
recomputed in the backward pass (activation checkpointing), so what autograd keeps is
the inputs and one state per group, never O(N·k·d).

The previous scan, a Python loop over chunks that builds each chunk's per-position
dispatchers, stays as :func:`causal_lda_scan_sequential`: the tests compare the two and
the naive reference (:mod:`elastic_bench.elastic.naive`) on fresh random inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

NEG = float("-inf")
THRESHOLD = 30.0  # a running max rising more than this inside one chunk: that chunk takes _exact_chunks (module docstring)
GROUP_BUDGET = 1 << 21  # elements of one group's working set (fp32: 8 MiB), chosen by measurement; docs/kernels.md
DEFAULT_CHUNK = 32  # chosen by measurement, docs/kernels.md "PyTorch causal scan"


def _prefix_states(r: Tensor, l: Tensor, acc: Tensor) -> tuple[Tensor, Tensor]:
    """Inclusive prefix over dim 2 of online-softmax states.

    Entry i holds ``(l_i, acc_i)`` relative to ``r_i``, and ``r`` is non-decreasing along
    dim 2 (a running max), so combining entry i with an earlier entry i' only rescales
    the earlier one by ``e^{r_i' - r_i} ≤ 1``.  Doubling: after the step with shift s,
    entry i holds entries i-2s+1 .. i; log2(n) steps.  ``r, l [B, h, n, k]``,
    ``acc [B, h, n, k, d]``; returns the prefix ``l, acc`` (the prefix max is ``r``).
    """
    n = r.shape[2]
    rref = torch.where(torch.isfinite(r), r, torch.zeros_like(r))
    shift = 1
    while shift < n:
        g = torch.exp(r[:, :, :-shift] - rref[:, :, shift:])  # 0 where nothing real is before
        l = torch.cat([l[:, :, :shift], torch.addcmul(l[:, :, shift:], g, l[:, :, :-shift])], 2)
        acc = torch.cat([acc[:, :, :shift], torch.addcmul(acc[:, :, shift:], g[..., None], acc[:, :, :-shift])], 2)
        shift *= 2
    return l, acc


def _exact_chunks(
    s: Tensor, m0: Tensor, l0: Tensor, acc0: Tensor, v1: Tensor, q2: Tensor, ck: Tensor, cv: Tensor, gk: Tensor, gv: Tensor, dropout_p: float
) -> Tensor:
    """Chunks whose running max rises more than :data:`THRESHOLD`: the unpack output with the
    per-position reference m_t (the issue's formulation; O(c²·k) weights per chunk).

    One row per chunk: scores ``s [n, h, c, k]``, chunk-start state
    ``m0, l0 [n, h, k]``, ``acc0 [n, h, k, d]``, ``v1, q2 [n, h, c, d]``, ``ck, cv [n, h, k, d]``.
    Returns ``[n, h, c, d]``.
    """
    c = s.shape[2]
    m = torch.maximum(torch.cummax(s.detach(), dim=2).values, m0[:, :, None])  # running max at each position
    ref = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    tri = torch.ones(c, c, dtype=torch.bool, device=s.device).tril()
    # mask before exp: a later score may exceed an earlier row's reference by > 88
    w = torch.exp((s[:, :, None, :, :] - ref[:, :, :, None, :]).masked_fill(~tri[:, :, None], NEG))  # [n,h,t,s,k]
    beta = torch.exp(m0[:, :, None, :] - ref)  # [n,h,t,k]
    lam = beta * l0[:, :, None, :] + w.sum(-2)
    lam = torch.where(lam > 0, lam, torch.ones_like(lam))  # 0 before any real token
    r = torch.einsum("hgde,ngte->nhgtd", gk, q2)
    num = torch.einsum("nhtsk,nhgts->nhgtk", w, torch.einsum("nhsd,nhgtd->nhgts", v1, r))
    num = num + beta[:, :, None] * torch.einsum("nhkd,nhgtd->nhgtk", acc0, r)
    a = torch.softmax(torch.einsum("ngtd,ngkd->ngtk", q2, ck) + (num / lam[:, :, None]).sum(1), -1)
    if dropout_p:
        a = F.dropout(a, dropout_p, True)
    at = a[:, None] / lam[:, :, None]  # [n,h,g,t,k]
    z = torch.einsum("nhgts,nhsd->nhgtd", torch.einsum("nhgtk,nhtsk->nhgts", at, w), v1)
    z = z + torch.einsum("nhgtk,nhkd->nhgtd", at * beta[:, :, None], acc0)
    return torch.einsum("ngtk,ngkd->ngtd", a, cv) + torch.einsum("nhgtd,hgde->ngte", z, gv)


def _mm(x: Tensor, y: Tensor, add: Tensor | None = None) -> Tensor:
    """``x @ y (+ add)`` over equal leading dims, as one (b)addbmm."""
    lead, rows, cols = x.shape[:-2], x.shape[-2], y.shape[-1]
    x3, y3 = x.reshape(-1, rows, x.shape[-1]), y.reshape(-1, y.shape[-2], cols)
    out = torch.bmm(x3, y3) if add is None else torch.baddbmm(add.reshape(-1, rows, cols), x3, y3)
    return out.view(*lead, rows, cols)


def _group(
    q1: Tensor,
    k1: Tensor,
    v1: Tensor,
    mask: Tensor,
    q2: Tensor,
    ck: Tensor,
    cv: Tensor,
    gk: Tensor,
    gv: Tensor,
    m_in: Tensor,
    l_in: Tensor,
    acc_in: Tensor,
    c: int,
    dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A run of whole chunks, all at once, from the carried state ``m_in, l_in [B, h, k]``,
    ``acc_in [B, h, k, d]``.  ``k1, v1, q2 [B, h, n, d]`` with n a multiple of ``c``.
    Returns the output ``[B, h, n, d]`` and the state after the run.  Reads one value on the
    host (whether any chunk needs :func:`_exact_chunks`): one sync per group on CUDA."""
    b, h, n, dh = k1.shape
    k, g, nc = q1.shape[2], h, n // c
    s = k1 @ q1.transpose(-1, -2)  # [B,h,n,k]
    s.masked_fill_(~mask[:, None, :, None], NEG)
    s = s.view(b, h, nc, c, k)
    # running max at each chunk end (M) and start (m⁰): references the result does not depend on
    sd = s.detach()
    r = torch.cummax(torch.cat([m_in[:, :, None], sd.amax(3)], 2), dim=2).values  # [B,h,C+1,k]
    big_m, m0 = r[:, :, 1:], r[:, :, :-1]
    # μ: the chunk's first finite running max (m_t is non-decreasing), from m⁰ and the first real score
    first = mask.view(b, nc, c).to(torch.uint8).argmax(-1)  # first real position of each chunk (0 if none)
    s_first = sd.gather(3, first[:, None, :, None, None].expand(b, h, nc, 1, k)).squeeze(3)
    mu = torch.where(torch.isfinite(m0), torch.maximum(m0, sd[:, :, :, 0]), s_first)
    rise = big_m - mu  # NaN where nothing is real yet (-inf - -inf): not a hazard
    jump = rise > THRESHOLD
    hazard = jump.any(-1).any(1)  # [B,C]: chunks redone by _exact_chunks
    any_hazard = bool(hazard.any())
    # reference of the chunk: μ (so Λ' ≥ 1 and E ≤ e^THRESHOLD), or M in a jumping entry (finite placeholders)
    ref = torch.where(jump, big_m, mu)
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    e = torch.exp(s - ref[:, :, :, None])  # E; 0 at padding
    v1c = v1.reshape(b, h, nc, c, dh).contiguous()  # read by three products below
    # states at every chunk end relative to M (the carried state prepended), then at every chunk start
    to_end = torch.exp(ref - torch.where(torch.isfinite(big_m), big_m, torch.zeros_like(big_m)))  # ≤ 1
    l, acc = _prefix_states(
        r, torch.cat([l_in[:, :, None], e.sum(-2) * to_end], 2), torch.cat([acc_in[:, :, None], _mm(e.transpose(-1, -2), v1c) * to_end[..., None]], 2)
    )
    l0, acc0 = l[:, :, :-1], acc[:, :, :-1]
    alpha = torch.exp(m0 - ref)  # ≤ 1
    lam = torch.cumsum(e, -2).add_((alpha * l0)[:, :, :, None])  # Λ' [B,h,C,t,k]: ≥ 1 once a real token is in
    bad = lam <= 0  # before any real token: dividing by 1 keeps those gradients finite
    if any_hazard:
        bad = bad | hazard[:, None, :, None, None]  # finite placeholders, replaced below
    inv_lam = lam.masked_fill(bad, 1.0).reciprocal()
    acc0a = acc0 * alpha[..., None]  # α_j acc⁰_j [B,h,C,k,d]
    # source head h, output head g: rows (g, t) stacked so every product is one batched matmul
    gkp = gk.permute(1, 3, 0, 2).reshape(g, dh, h * dh)  # [g, e, (h, d)]: r_t^{h,g} = Gk^{h,g} q2_t^g
    q2p = q2.transpose(0, 1).reshape(g, b * n, dh)
    if ck.shape[0] == 1:  # shared dispatchers: q2·Ck in the same product
        proj = torch.bmm(q2p, torch.cat([gkp, ck[0].transpose(-1, -2)], -1))
        rq, sck = proj[..., : h * dh], proj[..., h * dh :]
    else:
        rq, sck = torch.bmm(q2p, gkp), (q2 @ ck.transpose(-1, -2)).transpose(0, 1)
    rq = rq.reshape(g, b, nc, c, h, dh).permute(1, 4, 2, 0, 3, 5).reshape(b, h, nc, g * c, dh)
    vr = _mm(rq, v1c.transpose(-1, -2))
    vr.view(-1, c, c).tril_()
    num = _mm(vr, e, _mm(rq, acc0a.transpose(-1, -2))).view(b, h, nc, g, c, k)
    # scores [B,C,g,t,k] = q2·Ck + Σ_h num^h / Λ'^h
    scores = torch.addcmul(sck.reshape(g, b, nc, c, k).permute(1, 2, 0, 3, 4), num[:, 0], inv_lam[:, 0, :, None])
    for hh in range(1, h):
        scores = scores.addcmul_(num[:, hh], inv_lam[:, hh, :, None])
    a = torch.softmax(scores, -1)
    if dropout_p:
        a = F.dropout(a, dropout_p, True)
    at = (a[:, None] * inv_lam[:, :, :, None]).view(b, h, nc, g * c, k)  # Ã
    u = _mm(at, e.transpose(-1, -2))
    u.view(-1, c, c).tril_()
    z = _mm(u, v1c, _mm(at, acc0a)).view(b, h, nc, g, c, dh)
    # out^g = Σ_h z^{h,g} Gv^{h,g} + a Cv^g: one product over (h, d) and k per output head
    zp = z.permute(3, 0, 2, 4, 1, 5).reshape(g, b * n, h * dh)
    gvp = gv.transpose(0, 1).reshape(g, h * dh, dh)
    ap = a.permute(2, 0, 1, 3, 4)  # [g,B,C,t,k]
    if cv.shape[0] == 1:
        out = torch.baddbmm(torch.bmm(zp, gvp), ap.reshape(g, b * n, k), cv[0])
    else:
        out = torch.bmm(zp, gvp).view(g, b, n, dh) + (ap.reshape(g, b, n, k).transpose(0, 1) @ cv).transpose(0, 1)
    out = out.view(g, b, nc, c, dh)
    if any_hazard:
        bi, ci = hazard.nonzero(as_tuple=True)
        exact = _exact_chunks(
            s[bi, :, ci], m0[bi, :, ci], l0[bi, :, ci], acc0[bi, :, ci], v1c[bi, :, ci],
            q2.view(b, g, nc, c, dh)[bi, :, ci], ck.expand(b, -1, -1, -1)[bi], cv.expand(b, -1, -1, -1)[bi], gk, gv, dropout_p,
        )
        out = out.permute(1, 2, 0, 3, 4).index_put((bi, ci), exact).permute(2, 0, 1, 3, 4)
    return out.reshape(g, b, n, dh).transpose(0, 1), r[:, :, -1], l[:, :, -1], acc[:, :, -1]


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
    chunk_size: int = DEFAULT_CHUNK,
    dropout_p: float = 0.0,
    budget: int = GROUP_BUDGET,
) -> Tensor:
    """Causal pack + unpack over the whole sequence; returns the per-head unpack output ``[B, h, N, d_h]``.

    ``q1 [B|1, h, k, d_h]`` and ``q2 [B, h, N, d_h]`` must already be scaled by 1/√d_h;
    ``k1, v1 [B, h, N, d_h]``; ``mask [B, N]`` (True = real); ``ck, cv [B|1, h, k, d_h]`` and
    ``gk, gv [h, h, d_h, d_h]`` from :meth:`LDALayer.folded_unpack_weights`.  Outputs at
    padding positions are defined (0-weight packs) but meaningless.  ``budget`` bounds one
    group's working set in elements (module docstring).  Half-precision inputs are scanned
    in float32 (running max, normaliser and states included, as FlashAttention keeps its
    statistics), with autocast off, and the output is cast back.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = k1.dtype
    if out_dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(k1.device.type):
        with torch.autocast(k1.device.type, enabled=False):
            f32 = [t.float() for t in (q1, k1, v1)] + [mask] + [t.float() for t in (q2, ck, cv, gk, gv)]
            out = causal_lda_scan(*f32, chunk_size=chunk_size, dropout_p=dropout_p, budget=budget)
        return out.to(out_dtype)
    b, h, n, dh = k1.shape
    k, c = q1.shape[2], chunk_size
    per_chunk = b * h * (h * c * (2 * c + 3 * k) + 6 * c * k + 3 * k * dh)  # working set of one chunk
    group = c * max(1, min(n // c, budget // per_chunk))
    tail = n % c  # the last n % c positions: one chunk of their own (the result does not depend on c)
    runs = [(start, min(start + group, n - tail), c) for start in range(0, n - tail, group)] + ([(n - tail, n, tail)] if tail else [])
    m = torch.full((b, h, k), NEG, dtype=k1.dtype, device=k1.device)
    l = torch.zeros((b, h, k), dtype=k1.dtype, device=k1.device)
    acc = torch.zeros((b, h, k, dh), dtype=k1.dtype, device=k1.device)
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in (q1, k1, v1, q2, ck, cv, gk, gv))
    outs = []
    for start, stop, cr in runs:
        sl = slice(start, stop)
        args = (q1, k1[:, :, sl], v1[:, :, sl], mask[:, sl], q2[:, :, sl], ck, cv, gk, gv, m, l, acc, cr, dropout_p)
        if use_ckpt:
            out, m, l, acc = checkpoint(_group, *args, use_reentrant=False, preserve_rng_state=dropout_p > 0)
        else:
            out, m, l, acc = _group(*args)
        outs.append(out)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


# ------------------------------------------------------------------ sequential reference


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


def causal_lda_scan_sequential(
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
    """The previous scan, kept as a reference: one chunk after another in a Python loop, each
    chunk's per-position packed dispatchers ``[B, h, k, c, d_h]`` built explicitly
    (O(N·k·c·d) time).  Same arguments and result as :func:`causal_lda_scan`.

    ``q1`` and ``q2`` must already be scaled by 1/√d_h.  Half-precision inputs are scanned in
    float32 (running max, normaliser and accumulator included, as FlashAttention keeps its
    statistics), with autocast off, and the output is cast back.
    """
    out_dtype = k1.dtype
    if out_dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(k1.device.type):
        with torch.autocast(k1.device.type, enabled=False):
            f32 = [t.float() for t in (q1, k1, v1)] + [mask] + [t.float() for t in (q2, ck, cv, gk, gv)]
            out = causal_lda_scan_sequential(*f32, chunk_size=chunk_size, dropout_p=dropout_p)
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
