"""One cell of an accuracy sweep: train it (in a fresh process on the CPU, checkpointed when
the sweep asks), and turn the result or the failure into its results row.  Both the local
sweep (:mod:`.accuracy`) and a launcher's workers (:func:`.tasks.accuracy_task`) run it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..data.resolve import load_dataset
from ..environment import free_memory, is_oom
from ..measure.cell import backend_info
from ..train.config import TrainConfig
from ..train.isolated import train_isolated
from ..train.rows import accuracy_row, base_row, write_run_json
from ..train.trainer import train


def _failure_row(cfg: TrainConfig, run_id: str, status: str, reason: str, t0: float) -> dict[str, Any]:
    return {**base_row(cfg, run_id), "status": status, "reason": reason[:500], "wall_s": round(time.perf_counter() - t0, 1)}


def train_cell(cfg: TrainConfig, spec: Any, datasets: dict[str, Any], run_id: str, device: torch.device) -> dict[str, Any]:
    """The results row of one training cell of an accuracy sweep (``spec``: its
    :class:`~.accuracy.AccuracySpec`); every failure is a row.  A trained row's ``wall_s`` is the
    run's own, over all its resumed segments; a failure's is the time this call spent on it."""
    t0 = time.perf_counter()
    info = backend_info(cfg.model)
    if info.cls is None:
        return _failure_row(cfg, run_id, f"skipped:{info.load_error}", "", t0)
    causal = cfg.causal_for(info.cls.capabilities.causal)
    why = info.cls.unavailable_reason(device, torch.float32, causal=causal, head_dim=cfg.d_model // cfg.heads, padding=True)
    if why:
        return _failure_row(cfg, run_id, f"skipped:{why}", "", t0)
    try:
        if cfg.data not in datasets:
            datasets[cfg.data] = load_dataset(cfg.data, spec.data_dir)
        ckpt = Path(spec.checkpoint_dir) / f"{cfg.config_hash()}.pt" if spec.checkpoint_dir else None
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
        run = train_isolated if device.type == "cpu" and spec.isolate else train
        res = run(cfg, datasets[cfg.data], ckpt)
        row = accuracy_row(res, run_id)
        if spec.runs_dir:
            write_run_json(Path(spec.runs_dir) / f"{cfg.model}-{cfg.config_hash()}.json", res, run_id)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)  # the row and the JSON hold what it was for
        return row
    except Exception as exc:  # noqa: BLE001 - every failure is a row
        status = "oom" if is_oom(exc) else f"error:{type(exc).__name__}"
        exc.__traceback__ = None
        free_memory(device)
        return _failure_row(cfg, run_id, status, str(exc), t0)
