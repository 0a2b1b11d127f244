"""Leave-one-out splits and training examples (ELASTIC_SPEC.md §4).

Per user sequence s (chronological): train = s[:-2]; validation predicts s[-2] from
s[:-2]; test predicts s[-1] from s[:-1].  Inputs keep the most recent ``max_len`` items.
Users with fewer than 3 items cannot be split and are left out (counted in ``dropped``).

Training objectives:

- ``all`` (causal models only): input train[:-1], targets train[1:]: the next item at
  every position; no input position sees its own target because the model is causal.
- ``last``: one prefix and the item after it per example: a random cut per user per
  epoch plus the full prefix (input train[:-1], target train[-1]).  No input ever
  contains its target, so it is valid for every backend and required for non-causal ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import SequenceDataset

OBJECTIVES = ("all", "last")


@dataclass
class EvalSet:
    """Inputs (most recent ``max_len`` items) and the one target of each user."""

    inputs: list[np.ndarray]
    targets: np.ndarray
    users: np.ndarray  # index into the dataset's users


@dataclass
class LeaveOneOut:
    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    dropped: int
    max_len: int


def leave_one_out(ds: SequenceDataset, max_len: int) -> LeaveOneOut:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    keep = [i for i, s in enumerate(ds.sequences) if len(s) >= 3]
    seqs = [ds.sequences[i] for i in keep]
    users = np.asarray(keep, dtype=np.int64)
    train = [s[:-2] for s in seqs]
    valid = EvalSet([s[:-2][-max_len:] for s in seqs], np.array([s[-2] for s in seqs], dtype=np.int64), users)
    test = EvalSet([s[:-1][-max_len:] for s in seqs], np.array([s[-1] for s in seqs], dtype=np.int64), users)
    return LeaveOneOut(train, valid, test, len(ds.sequences) - len(keep), max_len)


def training_examples(
    train: list[np.ndarray], objective: str, max_len: int, rng: np.random.Generator, cuts: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, targets) for one epoch.  ``all``: targets align with inputs; ``last``: one target each."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")  # s[-0:] would be the whole sequence
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    if objective == "all":
        for s in train:
            if len(s) < 2:
                continue
            w = s[-(max_len + 1) :]
            inputs.append(w[:-1])
            targets.append(w[1:])
    elif objective == "last":
        for s in train:
            if len(s) < 2:
                continue
            drawn = rng.integers(1, len(s), size=cuts)  # input s[:cut], target s[cut]
            for cut in drawn:
                inputs.append(s[:cut][-max_len:])
                targets.append(s[cut : cut + 1])
            if (len(s) - 1) not in drawn:
                inputs.append(s[:-1][-max_len:])
                targets.append(s[-1:])
    else:
        raise ValueError(f"unknown objective {objective!r}; accepted: {', '.join(OBJECTIVES)}")
    return inputs, targets
