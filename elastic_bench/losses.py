"""Next-item losses of the recommender, shared by the benchmark's ``train_step`` and training.

Objectives (which positions are trained):

- ``all``: the next item at every real position (SASRec); needs a causal model, since
  a non-causal one would read its own targets.  ``targets [B, N]``, 0 = no target.
- ``last``: only the item after the last position (``model.user_repr``); the objective of
  non-causal models such as ``elastic``.  ``targets [B]``.

Losses: ``full`` softmax cross-entropy over the whole catalogue (``model.scores``), or
``sampled`` softmax against ``negatives`` uniformly drawn items per sequence.

Example::

    >>> loss = next_item_loss(model, items, items_next, objective="all")   # causal model
    >>> loss.backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("all", "last")
PER_POSITION_CHUNK = 256  # positions per block of the per-position sampled softmax
LOSSES = ("full", "sampled")


def _representations(model: nn.Module, items: Tensor, targets: Tensor, objective: str) -> tuple[Tensor, Tensor]:
    """``(h [B, M, D], targets [B, M])`` with M = N (``all``) or 1 (``last``); target 0 = none."""
    if objective == "all":
        if not getattr(model, "causal", True):
            raise ValueError("objective 'all' needs a causal model (a non-causal one would see its targets); use 'last'")
        if targets.shape != items.shape:
            raise ValueError(f"objective 'all' needs targets shaped like items {tuple(items.shape)}, got {tuple(targets.shape)}")
        return model(items), targets
    if objective == "last":
        if targets.dim() != 1 or targets.shape[0] != items.shape[0]:
            raise ValueError(f"objective 'last' needs targets [B={items.shape[0]}], got {tuple(targets.shape)}")
        return model.user_repr(items)[:, None], targets[:, None]
    raise ValueError(f"unknown objective {objective!r}; accepted: {', '.join(OBJECTIVES)}")


def next_item_loss(
    model: nn.Module,
    items: Tensor,
    targets: Tensor,
    objective: str,
    loss: str = "full",
    negatives: int = 128,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    negatives_per: str = "sequence",
) -> Tensor:
    """Mean next-item cross-entropy of ``model`` on left-padded ``items`` (see the module doc).

    Logits are divided by ``temperature``; with ``model.cfg.l2_norm`` both the user
    representations and the item embeddings are L2-normalised first (cosine logits).
    ``sampled``: each sequence draws its own ``negatives`` items uniformly, shared by its
    positions (so a batch of B sequences contrasts against B·n negatives, close to a
    per-position sampler at a fraction of the memory); a negative equal to a position's
    own target is masked out.  ``negatives_per="position"`` draws them for every position
    (generative-recommenders' local sampler; B·N·n gathered embeddings, so more memory).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    h, t = _representations(model, items, targets, objective)
    keep = t != 0
    q = model.score_queries(h)
    emb = model.output_embeddings()
    if loss == "full":
        logits = q[keep] @ emb[1:].t()  # column 0 (padding) is never a candidate
        return F.cross_entropy(logits.float() / temperature, t[keep] - 1)
    if loss == "sampled":
        n_items = emb.shape[0] - 1
        pos_logit = (q * emb[t]).sum(-1, keepdim=True)  # [B, M, 1]
        if negatives_per == "sequence":
            neg = torch.randint(1, n_items + 1, (q.shape[0], negatives), device=q.device, generator=generator)
            neg_logit = torch.einsum("bmd,bkd->bmk", q, emb[neg])  # [B, M, n]
            neg_logit = neg_logit.masked_fill(neg[:, None, :] == t[:, :, None], float("-inf"))  # accidental hits
            logits = torch.cat([pos_logit, neg_logit], dim=-1)[keep].float() / temperature
        elif negatives_per == "position":
            qk, tk = q[keep], t[keep]  # only real positions: [P, D], [P]
            neg = torch.randint(1, n_items + 1, (len(tk), negatives), device=q.device, generator=generator)
            # fp32 in and out, autocast off: the backward recomputes the logits, and they must be
            # the forward's to the bit (a bf16 forward under AMP would not match its backward)
            with torch.autocast(q.device.type, enabled=False):
                return PerPositionSampledSoftmax.apply(qk.float(), emb.float(), tk, neg, temperature, PER_POSITION_CHUNK)
        else:
            raise ValueError(f"negatives_per={negatives_per!r}; accepted: sequence, position")
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=q.device))
    raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")


def _candidate_logits(q: Tensor, emb: Tensor, t: Tensor, neg: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(logits [P, 1+n] fp32, candidate embeddings [P, 1+n, D])``: column 0 the target, then the
    negatives, accidental hits (a negative equal to the target) at -inf."""
    cand = torch.cat([t[:, None], neg], dim=1)
    e = emb[cand]
    logits = torch.bmm(e, q[:, :, None]).squeeze(-1).to(_acc(q)) / temperature
    logits[:, 1:].masked_fill_(neg == t[:, None], float("-inf"))
    return logits, e


class PerPositionSampledSoftmax(torch.autograd.Function):
    """Mean sampled-softmax cross-entropy with negatives drawn per position, in blocks of positions.

    ``forward(q [P, D], emb [I+1, D], t [P], neg [P, n], temperature, chunk)``; the loss of
    position p is ``logsumexp(l_p) - l_p[0]`` with ``l_p = [<q_p, e_t>, <q_p, e_neg>...] / T``.
    The eager form (:func:`per_position_sampled_softmax_reference`) materialises the
    ``[P, n, D]`` gathered negatives and scatters a gradient of the same size into the item
    table; here each block of ``chunk`` positions is gathered, used and dropped (recomputed in
    the backward pass), which keeps the working set in cache: 2.3x faster for a batch of
    ML-1M (P = 21,760, n = 128, d = 50) on the 2-core CPU, and it saves only the ``[P, n]``
    sampled ids and ``[P]`` log-normalisers (the eager form keeps ``[P, n, d]`` floats).
    Call it outside autocast with inputs of one dtype (``next_item_loss`` does).
    """

    @staticmethod
    def forward(ctx, q: Tensor, emb: Tensor, t: Tensor, neg: Tensor, temperature: float, chunk: int) -> Tensor:  # type: ignore[override]
        n = q.shape[0]
        lse = torch.empty(n, dtype=_acc(q), device=q.device)
        total = torch.zeros((), dtype=_acc(q), device=q.device)
        for s in range(0, n, chunk):
            logits, _ = _candidate_logits(q[s : s + chunk], emb, t[s : s + chunk], neg[s : s + chunk], temperature)
            lse[s : s + chunk] = logits.logsumexp(-1)
            total += (lse[s : s + chunk] - logits[:, 0]).sum()
        ctx.save_for_backward(q, emb, t, neg, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return (total / max(n, 1)).to(q.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        q, emb, t, neg, lse = ctx.saved_tensors
        temperature, chunk = ctx.temperature, ctx.chunk
        n, d = q.shape
        dq = torch.empty_like(q)
        demb = torch.zeros(emb.shape, dtype=_acc(q), device=emb.device)
        scale = grad.to(_acc(q)) / (max(n, 1) * temperature)
        for s in range(0, n, chunk):
            qc, tc, nc = q[s : s + chunk], t[s : s + chunk], neg[s : s + chunk]
            logits, e = _candidate_logits(qc, emb, tc, nc, temperature)
            p = torch.exp(logits - lse[s : s + chunk, None])  # softmax; -inf columns give 0
            p[:, 0] -= 1.0
            dl = p * scale  # d loss / d <q, e_candidate>
            dq[s : s + chunk] = torch.bmm(dl[:, None, :].to(e.dtype), e).squeeze(1)
            cand = torch.cat([tc[:, None], nc], dim=1).reshape(-1)
            demb.index_add_(0, cand, (dl[:, :, None] * qc[:, None, :].to(dl.dtype)).reshape(-1, d))
        return dq, demb.to(emb.dtype), None, None, None, None


def per_position_sampled_softmax_reference(q: Tensor, emb: Tensor, t: Tensor, neg: Tensor, temperature: float) -> Tensor:
    """The eager oracle of :class:`PerPositionSampledSoftmax` (same inputs, same value)."""
    neg_logit = torch.einsum("pd,pkd->pk", q, emb[neg]).masked_fill(neg == t[:, None], float("-inf"))
    pos_logit = (q * emb[t]).sum(-1, keepdim=True)
    logits = torch.cat([pos_logit, neg_logit], dim=-1).to(_acc(q)) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=q.device))


def _acc(t: Tensor) -> torch.dtype:
    """The accumulation dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)
