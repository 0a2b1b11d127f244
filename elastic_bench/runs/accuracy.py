"""Accuracy sweeps: train and evaluate every cell of models × options × seeds × max lengths.

The same results store as the efficiency sweep (one fsync'ed row per cell, ``task=accuracy``,
resumption keyed by ``config_hash``), the same option-axis rule (``--experts``,
``--memory-size``, ``--topk`` are crossed only with the backends that declare them), and
every failure is a row (``oom``, ``skipped:<reason>``, ``error:<type>``).

On the CPU every cell trains in a fresh process of its own
(:func:`~elastic_bench.train.isolated.train_isolated`), so that its peak memory is its own
(``mem_method = cpu-rss-subprocess``), not the high-water mark of the cells before it;
``isolate=False`` trains in this process (``cpu-vmhwm-reset``: the peak during the run,
counting whatever earlier cells left resident).

Example::

    elastic-bench sweep --task accuracy --models softmax,elastic --seeds 0,1,2 \\
        --data ml-1m --data-dir ~/data --preset sasrec-ml1m --epochs 20
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..environment import resolve_device
from ..grammar import GrammarError
from ..measure.cell import backend_info
from ..store import ResultsStore
from ..train.checkpoint import checkpoint_progress
from ..train.config import TrainConfig
from ..train.rows import base_row
from .grid import option_combos
from .launch import is_remote
from .sweep import make_progress
from .train_cell import train_cell


@dataclass(frozen=True)
class AccuracySpec:
    base: TrainConfig
    models: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    max_lens: tuple[int, ...] = ()
    option_axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    data_dir: str | None = None
    out: str = "results/accuracy.csv"
    resume: bool = True
    dry_run: bool = False
    plot: bool = True
    isolate: bool = True  # CPU: each cell in a fresh process (its own peak RSS)
    # long cells: a checkpoint per cell (<dir>/<config_hash>.pt, every epoch; resumed, removed
    # once its row is written) and a JSON per finished run with its epoch history
    checkpoint_dir: str | None = None
    runs_dir: str | None = None
    threads: int = 0  # CPU: torch intra-op threads of every cell (0: leave as is)


@dataclass
class AccuracyResult:
    out: Path
    total: int
    ran: int = 0
    statuses: Counter = field(default_factory=Counter)
    rows: list[dict[str, Any]] = field(default_factory=list)


def expand_accuracy(spec: AccuracySpec) -> list[TrainConfig]:
    """One :class:`TrainConfig` per cell, in a stable order."""
    cells = []
    for model in spec.models:
        info = backend_info(model)
        combos = option_combos(info, spec.option_axes) if info.cls is not None else [()]
        for opts in combos:
            for max_len in spec.max_lens or (spec.base.max_len,):
                for seed in spec.seeds:
                    cfg = dataclasses.replace(spec.base, model=model, seed=seed, max_len=max_len, options=())
                    swept = dict(opts)
                    cells.append(cfg.with_options(**{k: v for k, v in swept.items() if k in info.options}))
    return cells


def print_accuracy_plan(cells: list[TrainConfig], done: dict[str, str], spec: AccuracySpec, console: Console) -> None:
    swept = {name for name, _ in spec.option_axes}
    todo = sum(1 for c in cells if c.config_hash() not in done)
    console.print(f"[bold]Accuracy grid:[/] {len(cells)} cells on {escape(spec.base.data)} — {todo} to run, {len(cells) - todo} already in {spec.out}")
    b = spec.base
    console.print(
        f"[dim]every cell: d={b.d_model} h={b.heads} L={b.layers} loss={b.loss} epochs≤{b.epochs} batch={b.batch_size} "
        f"lr={b.lr} eval={escape(b.eval)}[/]"
    )
    table = Table(header_style="bold")
    for col in ("#", "model", "options", "max_len", "seed", "state"):
        table.add_column(col)
    for i, c in enumerate(cells[:12]):
        opts = ",".join([f"{k}={v}" for k, v in c.options if k in swept] + c.causality_shown()) or "-"
        table.add_row(str(i + 1), c.model, opts, str(c.max_len), str(c.seed), done.get(c.config_hash()) or _pending_state(spec, c))
    if len(cells) > 12:
        table.add_row("…", f"{len(cells) - 12} more", "", "", "", "")
    console.print(table)


def _pending_state(spec: AccuracySpec, cfg: TrainConfig) -> str:
    """``pending``, or ``pending: 12/56 epochs in its checkpoint (resumes there), 27.9 s per epoch``
    for a cell that an interrupted run left checkpointed (:func:`..train.checkpoint.checkpoint_progress`)."""
    ckpt = Path(spec.checkpoint_dir) / f"{cfg.config_hash()}.pt" if spec.checkpoint_dir else None
    return f"pending: {checkpoint_progress(ckpt, cfg.epochs)}" if ckpt is not None and ckpt.is_file() else "pending"


def run_accuracy_sweep(spec: AccuracySpec, console: Console | None = None, progress: bool = True, launcher: Any = None) -> AccuracyResult:
    """Train the missing cells of ``spec`` here or on ``launcher`` (:mod:`elastic_bench.runs.launch`);
    this process appends every row."""
    console = console or Console(emoji=False)
    cells = expand_accuracy(spec)
    if not cells:
        raise GrammarError("--models: nothing to run")
    store = ResultsStore(spec.out)
    store.check_schema()
    done = store.completed() if spec.resume else {}
    print_accuracy_plan(cells, done, spec, console)
    result = AccuracyResult(Path(spec.out), len(cells))
    if spec.dry_run:
        console.print("[dim]--dry-run: nothing trained, nothing written[/]")
        return result
    todo = [c for c in cells if c.config_hash() not in done]
    if not todo:
        console.print(f"[bold]Done:[/] nothing to run, every cell is already in {spec.out}")
        return result
    device = resolve_device(spec.base.device)
    datasets: dict[str, Any] = {}
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    store.open()
    bar = make_progress(console, disable=not progress)
    threads_before = torch.get_num_threads()
    if spec.threads and device.type == "cpu":
        torch.set_num_threads(spec.threads)
    try:
        with bar:
            task = bar.add_task("accuracy", total=len(todo), last="")
            if is_remote(launcher):
                bar.update(task, description=f"[cyan]{launcher.describe()}[/]")
                rows = _remote_rows(todo, spec, run_id, launcher)
            else:
                rows = _local_rows(todo, spec, datasets, run_id, device, lambda c: bar.update(task, description=f"[cyan]{_label(c)}[/]"))
            for cfg, row in rows:
                store.append(row)
                result.ran += 1
                result.rows.append(row)
                result.statuses[row["status"].split(":", 1)[0]] += 1
                ndcg = row.get("ndcg@10")
                last = f"NDCG@10 {ndcg:.4f}" if row["status"] == "ok" and ndcg is not None else row["status"][:50]
                bar.update(task, advance=1, last=f"last: {cfg.model} {last}")
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/] {result.ran} rows written to {spec.out}; rerun the same command to resume")
        raise
    finally:
        store.close()
        torch.set_num_threads(threads_before)
    console.print(f"[bold]Done:[/] {result.ran} rows ({', '.join(f'{k} {v}' for k, v in sorted(result.statuses.items()))}) -> {spec.out}")
    if spec.plot:
        from ..report.accuracy_plots import plot_accuracy
        from ..report.figure_kit import default_report_dir

        files = plot_accuracy([spec.out], default_report_dir(spec.out))
        console.print(f"plots: {sum(1 for f in files if f.suffix == '.png')} figures in {default_report_dir(spec.out)}/")
    return result


def _label(cfg: TrainConfig) -> str:
    return " ".join([cfg.model, str(dict(cfg.options) or ""), *cfg.causality_shown(), f"N={cfg.max_len}", f"seed={cfg.seed}"])


def _local_rows(todo: list[TrainConfig], spec: AccuracySpec, datasets: dict[str, Any], run_id: str, device: torch.device, on_start: Any) -> Iterator[tuple[TrainConfig, dict[str, Any]]]:
    for cfg in todo:
        on_start(cfg)
        yield cfg, train_cell(cfg, spec, datasets, run_id, device)  # wall_s: the run's, across resumes


def _remote_rows(todo: list[TrainConfig], spec: AccuracySpec, run_id: str, launcher: Any) -> Iterator[tuple[TrainConfig, dict[str, Any]]]:
    """Every cell a task of its own (one GPU each on CUDA, else one CPU); rows as they finish."""
    from .launch import Job
    from .sweep import launcher_failure
    from .tasks import accuracy_task

    # workers may start elsewhere: give them absolute paths
    data_dir = str(Path(spec.data_dir).resolve()) if spec.data_dir else None
    wspec = dataclasses.replace(spec, data_dir=data_dir)
    cuda = resolve_device(spec.base.device).type == "cuda"
    cfgs = {c.config_hash(): c for c in todo}
    jobs = [Job(h, (c, wspec, run_id, _absolute_data(c)), num_cpus=1, num_gpus=1 if cuda else 0) for h, c in cfgs.items()]
    for out in launcher.run(accuracy_task, jobs):
        cfg = cfgs[out.job.key]
        yield cfg, (out.row if out.row is not None else {**base_row(cfg, run_id), **launcher_failure(out)})


def _absolute_data(cfg: TrainConfig) -> str | None:
    """The absolute path of a data file named by a path (None for named and synthetic data):
    a worker may not share this process's working directory."""
    p = Path(cfg.data)
    return str(p.resolve()) if p.is_file() else None
