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
            neg_logit = torch.einsum("pd,pkd->pk", qk, emb[neg]).masked_fill(neg == tk[:, None], float("-inf"))
            logits = torch.cat([pos_logit[keep], neg_logit], dim=-1).float() / temperature
        else:
            raise ValueError(f"negatives_per={negatives_per!r}; accepted: sequence, position")
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=q.device))
    raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")
