"""What a checkpoint says of its run's progress: epochs done and the pace the budget reads back."""

from __future__ import annotations

import torch

from elastic_bench.report.training_budget import own_pace_hours, remaining_fraction
from elastic_bench.train.checkpoint import checkpoint_progress


def save(path, history: list[dict], wall_s: float | None, legacy: bool = False) -> None:
    state = {"history": history, **({"wall_s": wall_s} if wall_s is not None else {})}
    torch.save({"state": state, "model": {"w": torch.zeros(4)}}, path, _use_new_zipfile_serialization=not legacy)


def test_progress_gives_epochs_and_pace(tmp_path):
    p = tmp_path / "a.pt"
    save(p, [{"epoch": i + 1, "epoch_s": 20.0} for i in range(4)], wall_s=100.0)
    line = checkpoint_progress(p, 56)
    assert line == "4/56 epochs in its checkpoint (resumes there), 25.0 s per epoch"
    assert own_pace_hours(line) == 52 * 25.0 / 3600 and remaining_fraction(line) == 1 - 4 / 56


def test_a_wall_time_of_one_segment_only_does_not_understate_the_pace(tmp_path):
    # resumed before the trainer carried its wall time: 40 epochs of 100 s, then 2 more, wall_s 200 s
    p = tmp_path / "old.pt"
    save(p, [{"epoch": i + 1, "epoch_s": 100.0} for i in range(42)], wall_s=200.0)
    assert checkpoint_progress(p, 56).endswith(", 100.0 s per epoch")
    save(p, [{"epoch": 1, "epoch_s": 30.0}], wall_s=None)  # no wall time at all
    assert checkpoint_progress(p, 56) == "1/56 epochs in its checkpoint (resumes there), 30.0 s per epoch"


def test_missing_empty_legacy_and_unreadable_checkpoints(tmp_path):
    assert checkpoint_progress(tmp_path / "none.pt", 56) == "not started"
    empty = tmp_path / "empty.pt"
    save(empty, [], wall_s=0.0)
    assert checkpoint_progress(empty, 56) == "0/56 epochs in its checkpoint (resumes there)"  # no pace from nothing
    legacy = tmp_path / "legacy.pt"  # torch's pre-zip format cannot be mmapped: read whole
    save(legacy, [{"epoch": 1, "epoch_s": 10.0}, {"epoch": 2, "epoch_s": 10.0}], wall_s=30.0, legacy=True)
    assert checkpoint_progress(legacy, 3) == "2/3 epochs in its checkpoint (resumes there), 15.0 s per epoch"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert checkpoint_progress(junk, 56).startswith("checkpoint unreadable (")
