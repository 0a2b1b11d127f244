"""A training result as one results-store row (the sweep's schema, ``task=accuracy``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..environment import environment, resolve_device
from .config import TrainConfig
from .trainer import TrainResult


def base_row(cfg: TrainConfig, run_id: str) -> dict[str, Any]:
    """The fields every accuracy row has, whatever its outcome."""
    opts = dict(cfg.options)
    device = resolve_device(cfg.device)
    return {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **environment(device.type),
        "task": "accuracy",
        "level": "model",
        "model": cfg.model,
        "options": ";".join(f"{k}={v}" for k, v in cfg.options),
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
        "loss": cfg.loss if cfg.loss == "full" else f"sampled:{cfg.negatives}",
        "dtype": "bf16-amp" if device.type == "cuda" and cfg.amp else "fp32",
        "batch": cfg.batch_size,
        "n_items": result.dataset_stats.get("items", ""),
        "params": result.params,
        "status": "ok",
        "reason": f"eval={result.protocol}; exclude_history={cfg.exclude_history}; best_epoch={result.best_epoch}/{result.epochs_run}; stopped={result.stopped}"
        + (f"; ddp={result.world_size}" if result.world_size > 1 else ""),  # processes of a DistributedDataParallel run
        "tokens_per_s": round(result.train_tokens_per_s, 1),
        "peak_mem_mb": round(result.peak_mem_mb, 1),
        "mem_method": result.mem_method,
        "wall_s": round(result.wall_s, 1),
        "dataset": result.dataset if result.protocol == "full" else f"{result.dataset} [{result.protocol}]",
        **metrics,
    }
