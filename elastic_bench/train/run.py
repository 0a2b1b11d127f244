"""`elastic-bench train`: preset + overrides -> a training run with a progress bar -> JSON + CSV row.

Under a multi-process launch (``torchrun ... -m elastic_bench.train``, or ``--nproc N``) every
rank runs this; only rank 0 prints, and writes the CSV row and the JSON (and the checkpoints).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..data.formats import LoadOptions
from ..data.resolve import load_dataset
from ..environment import resolve_device
from ..grammar import GrammarError, parse_memory_sizes
from ..presets import published_reference, train_preset
from ..store import ResultsStore
from . import distributed
from .config import config_from_mapping
from .rows import accuracy_row, write_run_json
from .trainer import train


def run_training(preset: str, values: dict[str, Any], data_dir: str | None, out: str, checkpoint: str | None, resume: bool, console: Console):
    if "memory_size" in values:
        try:
            values["memory_size"] = parse_memory_sizes(str(values["memory_size"]))[0]
        except GrammarError as exc:
            raise ValueError(str(exc)) from None
    cfg = config_from_mapping(train_preset(preset, values.pop("model", None)), values)
    distributed.init_from_env(resolve_device(cfg.device).type)
    main = distributed.is_main()
    if not main:
        console = Console(quiet=True)
        distributed.barrier()  # rank 0 loads (and caches) the dataset first
    ds = load_dataset(cfg.data, data_dir, LoadOptions(fmt=cfg.fmt), cache_dir=Path(out).parent / ".cache")
    if main:
        distributed.barrier()
    stats = ds.stats()
    console.print(
        f"[bold]{escape(cfg.model)}[/] on {escape(ds.name)}: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions; preset {escape(preset)}; eval {escape(cfg.eval)}"
    )
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console
    )
    with bar:
        epoch_task = bar.add_task("epochs", total=cfg.epochs, info="")
        step_task = bar.add_task("steps", total=1, info="")

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "step":
                bar.update(step_task, total=ev["steps"], completed=ev["step"], info=f"loss {ev['loss']:.4f}", description=f"epoch {ev['epoch']}")
            else:
                valid = f" valid NDCG@10 {ev['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in ev else ""
                info = f"loss {ev['loss']:.4f}{valid} ({ev['epoch_s']:.1f} s/epoch)"
                bar.update(epoch_task, completed=ev["epoch"], info=info)
                if not console.is_terminal:  # a log file (nohup, SLURM): one line per epoch instead of a bar
                    console.print(f"epoch {ev['epoch']}/{cfg.epochs}: {info}, {ev['wall_s'] / 60:.1f} min")

        result = train(cfg, ds, Path(checkpoint) if checkpoint else None, resume, progress if main else None)
    if not main:
        return result
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    row = accuracy_row(result, run_id)
    store = ResultsStore(out)
    store.check_schema()
    store.open()
    try:
        store.append(row)
    finally:
        store.close()
    json_path = write_run_json(Path(out).parent / f"{Path(out).stem}-{run_id}.json", result, run_id, preset=preset)
    # every label a user typed (model, dataset, protocol) is escaped: "sampled:100:uniform" stays itself
    table = Table(title=escape(f"{cfg.model} on {ds.name}: test at best validation epoch {result.best_epoch} ({result.protocol} ranking)"))
    published = published_reference(cfg)  # only beside a run of the published model, dataset and protocol
    for col in ("metric", "valid", "test") + (("published SASRec",) if published else ()):
        table.add_column(col)
    for k in ("hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200"):
        ref = (f"{published[k]:.4f}" if k in published else "",) if published else ()
        table.add_row(k, f"{result.valid.get(k, float('nan')):.4f}", f"{result.test.get(k, float('nan')):.4f}", *ref)
    console.print(table)
    ddp = f", {result.world_size} processes (DDP)" if result.world_size > 1 else ""
    console.print(
        f"{result.epochs_run} epochs ({result.stopped}{ddp}), {result.wall_s / 60:.1f} min, {result.train_tokens_per_s:,.0f} train tokens/s, "
        f"peak memory {result.peak_mem_mb:,.0f} MB ({result.mem_method}) -> {out}, {json_path}"
    )
    return result
