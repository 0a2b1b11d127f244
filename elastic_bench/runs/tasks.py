"""The functions a remote launcher's workers run: one cell in, one results row out.

The sweep and the accuracy sweep hand these functions to the launcher; they import the
measuring engine (:mod:`elastic_bench.measure.engine`) and the training of one cell
(:mod:`.train_cell`), never the sweeps that call them.

They are module-level (Ray imports them by name on the worker, which must have
elastic-bench installed) and keep per-process caches, so a worker that runs many cells
builds its correctness-gate cache and loads a dataset once.  They never raise for a
failure of the cell itself: that is a row, exactly as with the local launcher.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

_ENGINES: dict[Any, Any] = {}
_DATASETS: dict[str, Any] = {}


def worker_device(device: str) -> str:
    """A worker sees only the GPU Ray gave it (``CUDA_VISIBLE_DEVICES``): ``cuda:N`` -> ``cuda``."""
    return "cuda" if device.startswith("cuda") else device


def efficiency_task(payload: tuple[Any, Any, str]) -> dict[str, Any]:
    """``(spec, cell, run_id)`` -> the cell's row, measured in this worker process."""
    from ..environment import environment
    from ..measure.engine import Engine, measure_row

    spec, cell, run_id = payload
    spec = dataclasses.replace(spec, device=worker_device(spec.device))
    if spec.threads and spec.device_type == "cpu":
        torch.set_num_threads(spec.threads)
    env = environment(spec.device_type)
    if cell.device_name and env["device_name"] and cell.device_name != env["device_name"]:
        from ..measure.engine import base_row

        why = f"skipped:device mismatch (cell planned for {cell.device_name}, worker on {os.uname().nodename} has {env['device_name']})"
        return {**base_row(cell, run_id, env, None), "status": why}
    key = dataclasses.replace(spec, out="", notes=())
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = Engine(spec)
    return measure_row(engine, cell, run_id, env)


def accuracy_task(payload: tuple[Any, Any, str, str | None]) -> dict[str, Any]:
    """``(train config, accuracy spec, run_id, absolute data path or None)`` -> the trained cell's row."""
    from ..data.resolve import load_dataset
    from ..environment import resolve_device
    from .train_cell import train_cell

    cfg, spec, run_id, data_path = payload
    if data_path and cfg.data not in _DATASETS:  # the config (and its hash) keep the user's spelling
        _DATASETS[cfg.data] = load_dataset(data_path, spec.data_dir)
    cfg = dataclasses.replace(cfg, device=worker_device(cfg.device))
    return train_cell(cfg, spec, _DATASETS, run_id, resolve_device(cfg.device))  # wall_s: the run's, across resumes
