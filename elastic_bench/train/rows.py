"""A training result as one results-store row (the sweep's schema, ``task=accuracy``).

A row records every backend option that shaped the run, the backend's declared defaults
included (:func:`resolved_options`), in ``options`` and in the ``experts`` / ``memory_size`` /
``topk`` columns, whether the user named them or not.  ``config_hash`` stays the config's own
(:meth:`TrainConfig.config_hash`, which hashes only the options the config names), so rows of
committed results keep resuming.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..environment import environment, resolve_device
from ..optimizers import epochs_implementation
from .config import TrainConfig
from .trainer import TrainResult


def resolved_options(cfg: TrainConfig) -> dict[str, Any]:
    """The backend's declared default options overridden by ``cfg.options``, sorted by name
    (``cfg.options`` alone where the backend is unknown or refuses them: that row is a failure)."""
    try:
        opts = registry.get(cfg.model).resolve_options(dict(cfg.options))
    except (KeyError, ValueError):
        opts = dict(cfg.options)
    return {k: _freeze(opts[k]) for k in sorted(opts)}


def _freeze(v: Any) -> Any:
    """Lists as tuples, as a sweep's cells hold them, so that both write the same text."""
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def base_row(cfg: TrainConfig, run_id: str) -> dict[str, Any]:
    """The fields every accuracy row has, whatever its outcome."""
    opts = resolved_options(cfg)
    device = resolve_device(cfg.device)
    return {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **environment(device.type),
        "task": "accuracy",
        "level": "model",
        "model": cfg.model,
        # a causality asked for (train --causal/--non-causal) is shown with the options, where a
        # reader and the verdict's labels look for what makes a cell differ; `causal` says what ran
        "options": ";".join([f"{k}={v}" for k, v in opts.items()] + cfg.causality_shown()),
        "causal": cfg.causal if cfg.causal is not None else "",
        "pass": "train",
        "seq_len": cfg.max_len,
        "d_model": cfg.d_model,
        "heads": cfg.heads,
        "layers": cfg.layers,
        "experts": opts.get("experts", ""),
        "memory_size": opts.get("memory_size", ""),
        "topk": opts.get("topk", ""),
        "dropout": cfg.dropout,
        "seed": cfg.seed,
        "dataset": cfg.data,
        "config_hash": cfg.config_hash(),
    }


def accuracy_row(result: TrainResult, run_id: str) -> dict[str, Any]:
    """A finished run: its test metrics (at the best validation epoch) and its costs."""
    cfg = result.config
    device = resolve_device(cfg.device)
    metrics = {k: v for k, v in result.test.items() if "@" in k}
    return {
        **base_row(cfg, run_id),
        "objective": result.objective,
        "causal": result.causal if result.causal is not None else "",
        "loss": cfg.loss if cfg.loss == "full" else f"sampled:{cfg.negatives}",
        "dtype": "bf16-amp" if device.type == "cuda" and cfg.amp else "fp32",
        "batch": cfg.batch_size,
        "n_items": result.dataset_stats.get("items", ""),
        "params": result.params,
        "status": "ok",
        "reason": f"eval={result.protocol}; exclude_history={cfg.exclude_history}; best_epoch={result.best_epoch}/{result.epochs_run}; stopped={result.stopped}"
        + (f"; ddp={result.world_size}" if result.world_size > 1 else "")  # processes of a DistributedDataParallel run
        + (f"; optimizer={epochs_implementation(result.history)}" if result.history else ""),
        "tokens_per_s": round(result.train_tokens_per_s, 1),
        "peak_mem_mb": round(result.peak_mem_mb, 1),
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else "",
        "mem_method": result.mem_method,
        "wall_s": round(result.wall_s, 1),
        "dataset": result.dataset if result.protocol == "full" else f"{result.dataset} [{result.protocol}]",
        **metrics,
    }


def write_run_json(path: Path, result: TrainResult, run_id: str, **extra: Any) -> Path:
    """A finished run's summary and epoch history as JSON (written whole or not at all); ``extra``
    keys (e.g. the preset's name) come first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"run_id": run_id, **extra, "config": result.config.to_dict(), "config_hash": result.config.config_hash(), **result.summary(), "history": result.history}
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(path)
    return path
