"""A training result as one results-store row (the sweep's schema, ``task=accuracy``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..environment import environment, resolve_device
from .trainer import TrainResult


def accuracy_row(result: TrainResult, run_id: str, config_hash: str | None = None) -> dict[str, Any]:
    cfg = result.config
    opts = dict(cfg.options)
    device = resolve_device(cfg.device)
    env = environment(device.type)
    metrics = {k: v for k, v in result.test.items() if "@" in k}
    return {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **env,
        "task": "accuracy",
        "level": "model",
        "model": cfg.model,
        "options": ";".join(f"{k}={v}" for k, v in cfg.options),
        "objective": result.objective,
        "loss": cfg.loss if cfg.loss == "full" else f"sampled:{cfg.negatives}",
        "pass": "train",
        "dtype": "bf16-amp" if device.type == "cuda" and cfg.amp else "fp32",
        "batch": cfg.batch_size,
        "seq_len": cfg.max_len,
        "d_model": cfg.d_model,
        "heads": cfg.heads,
        "layers": cfg.layers,
        "n_items": result.dataset_stats.get("items", ""),
        "experts": opts.get("experts", ""),
        "memory_size": opts.get("memory_size", ""),
        "topk": opts.get("topk", ""),
        "dropout": cfg.dropout,
        "params": result.params,
        "status": "ok",
        "reason": f"eval={result.protocol}; best_epoch={result.best_epoch}/{result.epochs_run}; stopped={result.stopped}",
        "tokens_per_s": round(result.train_tokens_per_s, 1),
        "peak_mem_mb": round(result.peak_mem_mb, 1),
        "mem_method": result.mem_method,
        "wall_s": round(result.wall_s, 1),
        "seed": cfg.seed,
        "dataset": result.dataset if result.protocol == "full" else f"{result.dataset} [{result.protocol}]",
        **metrics,
        "config_hash": config_hash or cfg.config_hash(),
    }
