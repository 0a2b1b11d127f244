"""Padding-aware batching: left padding to the longest sequence *in the batch*, never to max_len.

Examples are bucketed by length (sorted inside shuffled pools of ``pool`` batches) so a
batch holds sequences of similar length, and the batch order is shuffled; columns that
are padding in every row are never built.  Deterministic given the generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def left_pad(seqs: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """``[B, L]`` int64, each row right-aligned (most recent item last), 0 = padding."""
    length = length or max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), max(length, 1)), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, -len(s) :] = s[-length:]
    return out


def batch_indices(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, pool: int = 50) -> list[np.ndarray]:
    """Batches of indices; with ``rng`` bucketed-by-length and shuffled, else in order."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")  # evaluation: similar lengths together, deterministic
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    perm = rng.permutation(n)
    batches = []
    step = batch_size * pool
    for start in range(0, n, step):
        chunk = perm[start : start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def iterate_batches(
    inputs: list[np.ndarray],
    targets: list[np.ndarray] | np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
    device: torch.device,
    aligned: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yields ``(items [B, L], targets, indices)``.

    ``aligned``: ``targets[i]`` is as long as ``inputs[i]`` (objective ``all``) and the
    targets come back ``[B, L]``, left-padded alike; otherwise one target per example
    (an array, or length-1 arrays) and they come back ``[B]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(targets) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
    lengths = np.array([len(s) for s in inputs], dtype=np.int64)
    if aligned:
        bad = next((i for i, t in enumerate(targets) if len(t) != lengths[i]), None)
        if bad is not None:
            raise ValueError(f"aligned targets: example {bad} has {len(targets[bad])} targets for {lengths[bad]} inputs")
    flat = None if aligned else np.asarray([int(np.asarray(t).reshape(-1)[-1]) for t in targets], dtype=np.int64)
    for idx in batch_indices(lengths, batch_size, rng):
        x = torch.from_numpy(left_pad([inputs[i] for i in idx])).to(device)
        if aligned:
            y = torch.from_numpy(left_pad([targets[i] for i in idx], x.shape[1])).to(device)
        else:
            y = torch.from_numpy(flat[idx]).to(device)
        yield x, y, idx
