"""Evaluation protocols: full-catalogue ranking (default) and sampled ranking (only when asked).

- ``full``: the target is ranked against every item of the catalogue.  Items already in
  the user's history are ranked as usual unless ``exclude_history`` is ``input`` (the
  items of the model's input window are removed from the ranking, as generative-recommenders
  does) or ``all`` (the user's whole history is removed); the target itself never is.
- ``sampled:N[:uniform|pop]``: the target against N negatives drawn without replacement
  from the items the user never interacted with, uniformly or by popularity.  Its numbers
  are *not* comparable with full ranking, so every output names the protocol.

Scores are computed in batches so that ``batch × n_items`` floats fit in memory.

Sharded (``rank``/``world``, or a distributed run): the batches are formed exactly as in one
process and rank r scores batches r, r + world, ...; the targets' integer ranks are then
summed over the processes (each user's rank is filled by one process, 0 elsewhere), and every
process computes the metrics from the complete array: the same numbers, bit for bit, as one
process scoring everything (sampled negatives are drawn for every user in the same order on
every rank, and kept for the rank's own users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.batching import batch_indices, left_pad
from ..data.splits import EvalSet
from ..metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from . import distributed


EXCLUDE = ("none", "input", "all")


@dataclass(frozen=True)
class Protocol:
    kind: str = "full"  # full | sampled
    negatives: int = 0
    sampler: str = "uniform"  # uniform | pop

    @property
    def label(self) -> str:
        return "full" if self.kind == "full" else f"sampled:{self.negatives}:{self.sampler}"

    @staticmethod
    def parse(text: str) -> "Protocol":
        """``full`` | ``sampled:N`` | ``sampled:N:uniform`` | ``sampled:N:pop``."""
        parts = text.split(":")
        if parts == ["full"]:
            return Protocol()
        if parts[0] == "sampled" and len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) > 0:
            sampler = parts[2] if len(parts) == 3 else "uniform"
            if sampler in ("uniform", "pop"):
                return Protocol("sampled", int(parts[1]), sampler)
        raise ValueError(f"--eval {text}: accepted forms are full, sampled:N, sampled:N:uniform, sampled:N:pop")


def _sample_negatives(history: np.ndarray, target: int, n_items: int, n: int, p: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    seen = np.zeros(n_items + 1, dtype=bool)
    seen[history] = True
    seen[target] = True
    seen[0] = True
    allowed = np.flatnonzero(~seen)
    if len(allowed) < n:
        raise ValueError(f"sampled:{n}: a user has only {len(allowed)} unseen items")
    w = None if p is None else p[allowed] / p[allowed].sum()
    return rng.choice(allowed, size=n, replace=False, p=w)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split: EvalSet,
    histories: list[np.ndarray],
    protocol: Protocol = Protocol(),
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 256,
    exclude_history: str = "none",
    item_counts: np.ndarray | None = None,
    seed: int = 0,
    rank: int | None = None,
    world: int | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split``; ``histories[u]`` are the items user ``u`` saw before the target.

    ``rank``/``world`` default to the process group's (one process: 0 and 1); in a world of
    several, every rank must call this, and all get the same metrics (see the module doc)."""
    if rank is None or world is None:
        rank, world, _ = distributed.dist_info()
    if world > 1 and not distributed.is_initialized():
        raise ValueError(f"evaluate(world={world}): a sharded evaluation needs the process group (distributed.init_from_env)")
    ranks = target_ranks_of(model, split, histories, protocol, batch_size, exclude_history, item_counts, seed, rank, world)
    if world > 1:
        t = torch.from_numpy(ranks)
        distributed.all_reduce_sum(t)
        ranks = t.numpy()
    out = metrics_from_ranks(ranks, ks)
    out["n_eval"] = float(len(ranks))
    return out


@torch.no_grad()
def target_ranks_of(
    model: torch.nn.Module,
    split: EvalSet,
    histories: list[np.ndarray],
    protocol: Protocol = Protocol(),
    batch_size: int = 256,
    exclude_history: str = "none",
    item_counts: np.ndarray | None = None,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """0-based rank of every user's target (``int64 [n_users]``); with ``world > 1`` only the
    users of this rank's batches (``rank::world``) are filled, the others are 0."""
    if protocol.kind == "full" and exclude_history not in EXCLUDE:
        raise ValueError(f"--exclude-history {exclude_history}: accepted: {', '.join(EXCLUDE)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_items = model.cfg.n_items
    rng = np.random.default_rng(seed)
    pop = None
    if protocol.kind == "sampled" and protocol.sampler == "pop":
        if item_counts is None:
            raise ValueError("sampled:N:pop needs item popularity counts")
        pop = item_counts.astype(np.float64) + 1e-12
    ranks = np.zeros(len(split.targets), dtype=np.int64)
    lengths = np.array([len(s) for s in split.inputs], dtype=np.int64)
    flat = np.asarray([int(np.asarray(t).reshape(-1)[-1]) for t in split.targets], dtype=np.int64)
    # the batches of one process (by length, deterministic); this rank scores every world-th one
    for b, idx in enumerate(batch_indices(lengths, batch_size, None)):
        cand = None
        if protocol.kind == "sampled":  # drawn for every batch, in order, so each user gets the same negatives on any world size
            cand = np.stack(
                [
                    np.concatenate([[split.targets[i]], _sample_negatives(histories[i], int(split.targets[i]), n_items, protocol.negatives, pop, rng)])
                    for i in idx
                ]
            )
        if b % world != rank:
            continue
        items = torch.from_numpy(left_pad([split.inputs[i] for i in idx])).to(device)
        targets = torch.from_numpy(flat[idx]).to(device)
        with torch.autocast(device.type, enabled=False):
            scores = model.scores(model.user_repr(items)).float()  # [B, 1 + n_items]
        if protocol.kind == "full":
            scores[:, 0] = float("-inf")  # padding id
            if exclude_history != "none":
                for row, i in enumerate(idx):
                    hist = histories[i] if exclude_history == "all" else split.inputs[i]
                    hist = hist[hist != split.targets[i]]
                    scores[row, torch.as_tensor(hist, device=device)] = float("-inf")
            ranks[idx] = target_ranks(scores, targets).cpu().numpy()
        else:
            cand_t = torch.as_tensor(cand, device=device)
            sub = scores.gather(1, cand_t)
            ranks[idx] = target_ranks(sub, torch.zeros(len(idx), dtype=torch.long, device=device)).cpu().numpy()
    model.train(was_training)
    return ranks
