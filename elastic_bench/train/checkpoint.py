"""Checkpoints written atomically after every epoch, so an interrupted run resumes where it was.

A checkpoint holds the model, optimisers, schedulers, the loop state (epoch, best
validation score, patience, history), the best model's weights, and the RNG states.
It is only resumed by the same configuration (:meth:`TrainConfig.checkpoint_key`: all but the
stopping rules, so a finished run can be extended with more epochs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..optimizers import align_loaded_state
from .config import TrainConfig


def save_checkpoint(path: Path, cfg: TrainConfig, model, optimizers, schedulers, state: dict[str, Any], best_state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "checkpoint_key": cfg.checkpoint_key(),
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "state": state,
        "best_state": best_state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": _cuda_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: TrainConfig, model, optimizers, schedulers) -> tuple[dict[str, Any], Any]:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("checkpoint_key") != cfg.checkpoint_key():
        raise ValueError(f"{path}: checkpoint of another configuration; use --no-resume or another --checkpoint")
    model.load_state_dict(payload["model"])
    for o, s in zip(optimizers, payload["optimizers"]):
        # the implementation built here (fused or not) runs on, whichever wrote the checkpoint
        o.load_state_dict(align_loaded_state(o, s))
    for sch, s in zip(schedulers, payload["schedulers"]):
        sch.load_state_dict(s)
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and _single_process_cuda():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["state"], payload["best_state"]


def checkpoint_progress(path: Path, epochs: int) -> str:
    """How far the run behind ``path`` got, in the wording :mod:`..report.training_budget` reads back:

    - ``"12/56 epochs in its checkpoint (resumes there), 27.9 s per epoch"``: its time so far over its
      epochs, evaluation included (the wall time, or the sum of epoch times where that is larger: a
      checkpoint of a run resumed before the trainer carried its wall time counts one segment only);
    - ``"not started"`` without a file; ``"checkpoint unreadable (<error>)"`` when it cannot be read.
    """
    if not path.is_file():
        return "not started"
    try:
        state = _loop_state(path)
        history = state.get("history") or []
        done = len(history)
        spent = max(float(state.get("wall_s") or 0.0), sum(float(h.get("epoch_s") or 0.0) for h in history))
    except Exception as exc:  # noqa: BLE001 - a progress note, never a reason to stop a plan
        return f"checkpoint unreadable ({type(exc).__name__})"
    pace = f", {spent / done:.1f} s per epoch" if done and spent > 0 else ""
    return f"{done}/{epochs} epochs in its checkpoint (resumes there){pace}"


def _loop_state(path: Path) -> dict[str, Any]:
    """A checkpoint's loop state, through mmap where it can (a 1m-slot bank's checkpoint is hundreds
    of MB and only this is needed); a file in torch's legacy format is read whole."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # mmap needs the zip format that torch.save has written since 1.6
        payload = torch.load(path, map_location="cpu", weights_only=False)
    return payload.get("state") or payload


def _single_process_cuda() -> bool:
    """Every GPU's RNG is this process's to save and restore only outside a multi-process run
    (under DDP each rank's streams travel in ``state["rank_rng"]``, and touching every GPU
    from every rank would open a CUDA context on each)."""
    import torch.distributed as dist

    return torch.cuda.is_available() and not (dist.is_available() and dist.is_initialized())


def _cuda_rng_state() -> list | None:
    return torch.cuda.get_rng_state_all() if _single_process_cuda() else None
