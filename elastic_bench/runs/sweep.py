"""The sweep: expand a :class:`SweepSpec` into cells, measure each, append a row.

For every cell, in order: already in the output with a final status -> skipped (resumption;
``--no-resume`` reruns); otherwise measured by :class:`~elastic_bench.measure.engine.Engine`
(gate, time, memory; every failure a status) here, or on a launcher's workers
(:mod:`.launch`, each running :func:`.tasks.efficiency_task`), and the headline cells again
in fresh processes (:mod:`.repeats`).

Each row is appended and fsync'ed at once (:mod:`elastic_bench.store`), so Ctrl-C loses at
most the cell in flight.  Nothing here imports a model: backends come from the registry by name.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..environment import device_name as _device_name
from ..environment import environment
from ..grammar import human_int
from ..measure.cell import Cell
from ..measure.engine import Engine, OomSeries, base_row, measure_row
from ..report.figure_kit import default_report_dir
from ..store import ResultsStore
from .grid import expand
from .launch import is_remote
from .repeats import ProcessPerRound, RepeatLog, headline, interleaved, timing_group
from .spec import SweepSpec

PREVIEW_ROWS = 12


@dataclass
class Plan:
    spec: SweepSpec
    cells: list[Cell]
    done: dict[str, str]  # config_hash -> status already in the output

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.config_hash() not in self.done]


@dataclass
class SweepResult:
    out: Path
    total: int
    already_done: int
    ran: int = 0
    statuses: Counter = field(default_factory=Counter)
    interrupted: bool = False
    plots: list[Path] = field(default_factory=list)
    wall_s: float = 0.0


def make_plan(spec: SweepSpec) -> Plan:
    """The expanded grid and what the output already holds (validates the output's schema)."""
    device = torch.device(spec.device)
    cells = expand(spec, _device_name(device))
    store = ResultsStore(spec.out)
    store.check_schema()
    done: dict[str, str] = {}
    if spec.resume:
        done = store.completed()
        if spec.retry_errors:
            done = {h: s for h, s in done.items() if not s.startswith(("error:", "skipped:"))}
    return Plan(spec, cells, done)


def _options_text(cell: Cell, axes: set[str]) -> str:
    """The swept options of a cell (the others are the backend's defaults)."""
    return ",".join(f"{k}={human_int(v) if isinstance(v, int) and not isinstance(v, bool) else v}" for k, v in cell.options if k in axes)


def print_plan(plan: Plan, console: Console) -> None:
    """The grid's size and a preview table (first and last cells)."""
    spec = plan.spec
    todo = len(plan.todo)
    console.print(
        f"[bold]Grid:[/] {len(plan.cells)} cells on {spec.device} — {todo} to run, "
        f"{len(plan.cells) - todo} already in {spec.out}"
    )
    for note in spec.notes:
        console.print(f"[yellow]note:[/] {note}")
    axes = {name for name, _ in spec.option_axes}
    getters = {
        "level": lambda c: c.level,
        "pass": lambda c: c.pass_,
        "dtype": lambda c: c.dtype,
        "model": lambda c: c.model,
        "causal": lambda c: "causal" if c.causal else "non-causal",
        "options": lambda c: _options_text(c, axes),
        "objective": lambda c: c.objective or "-",
        "d/h/L": lambda c: f"{c.d_model}/{c.heads}/{c.layers}",
        "batch": lambda c: str(c.batch),
        "seq_len": lambda c: str(c.seq_len),
    }
    always = {"model", "batch", "seq_len"}
    cols = [k for k, get in getters.items() if k in always or len({get(c) for c in plan.cells}) > 1]
    constant = [f"{k}={getters[k](plan.cells[0])}" for k in getters if k not in cols and plan.cells and getters[k](plan.cells[0])]
    if constant:
        console.print("[dim]every cell: " + ", ".join(constant) + "[/]")
    idx = list(range(len(plan.cells)))
    shown = idx if len(idx) <= PREVIEW_ROWS else idx[: PREVIEW_ROWS - 2] + [-1] + idx[-2:]
    body = []
    for i in shown:
        if i == -1:
            body.append(["…"] + [""] * (len(cols) + 1))
            continue
        c = plan.cells[i]
        body.append([str(i + 1), *[getters[k](c) for k in cols], plan.done.get(c.config_hash(), "pending")])
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1), collapse_padding=True)
    for j, col in enumerate(["#"] + cols + ["state"]):
        width = max([len(col)] + [len(r[j]) for r in body])
        table.add_column(col, justify="right" if col in ("#", "batch", "seq_len") else "left", min_width=width, overflow="fold")
    for r in body:
        table.add_row(*r)
    console.print(table)


def remote_rows(spec: SweepSpec, todo: list[Cell], run_id: str, env: dict[str, str], launcher: Any) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """``(cell, row)`` as the cells finish on ``launcher``'s workers (in any order).

    Each series of sequence lengths is one group (run in order), so that after an
    out-of-memory the driver skips the series' longer lengths as the local engine does.
    """
    from .launch import Job
    from .tasks import efficiency_task

    oom = OomSeries()
    cells: dict[str, Cell] = {}
    jobs = []
    cuda = spec.device_type == "cuda"
    for cell in todo:
        key = cell.config_hash()
        cells[key] = cell
        jobs.append(Job(key, (spec, cell, run_id), group=cell.series().config_hash(), num_cpus=1 if cuda else max(1, spec.threads), num_gpus=1 if cuda else 0))
    for out in launcher.run(efficiency_task, jobs, skip=lambda job: oom.skip_reason(cells[job.key])):
        cell = cells[out.job.key]
        row = out.row if out.row is not None else {**base_row(cell, run_id, env, None), **launcher_failure(out)}
        if row.get("status") == "oom":
            oom.record(cell)
        yield cell, row


def launcher_failure(out: Any) -> dict[str, Any]:
    """The status fields of a task that returned no row (worker lost, killed for memory...)."""
    status = {"worker-lost": "error:worker-lost"}.get(out.status, out.status)
    return {"status": status, "reason": out.reason}


def _summary(fields: dict[str, Any]) -> str:
    status = fields.get("status", "")
    if status == "ok":
        return f"ok {fields['latency_ms_p50']:.2f} ms, {fields['peak_mem_mb']:.0f} MB"
    return status[:60]


def make_progress(console: Console, disable: bool = False) -> Progress:
    """The progress bar of every sweep: cell, count, elapsed, ETA and the last result."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        disable=disable,
    )


def _local_rows(engine: Engine, todo: list[Cell], run_id: str, env: dict[str, str], on_start: Any) -> Iterator[tuple[Cell, dict[str, Any]]]:
    for cell in todo:
        on_start(cell)
        yield cell, measure_row(engine, cell, run_id, env)


def _repeated_rows(engine: Engine, cells: list[Cell], run_id: str, env: dict[str, str], on_repeat: Any) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Headline cells: ``process_repeats`` interleaved runs, each in a fresh process (:mod:`.repeats`);
    with ``interleave_calls``, each round times the cells of one workload shape call by call together."""
    spec = engine.spec
    with ProcessPerRound() as workers:

        def measure(cell: Cell, rnd: int) -> dict[str, Any]:
            why = engine.oom.skip_reason(cell)
            if why:
                return {**base_row(cell, run_id, env, None), "status": f"skipped:{why}"}
            return workers.measure((spec, cell, run_id, env), rnd)

        def measure_group(group: list[Cell], rnd: int) -> list[dict[str, Any]]:
            skipped = {c: engine.oom.skip_reason(c) for c in group}
            todo = [c for c in group if not skipped[c]]
            token = timing_group(run_id, rnd, todo)  # who was timed with whom, in this round
            rows = iter([{**r, "timing_group": token} for r in workers.measure((spec, todo, run_id, env), rnd)] if todo else [])
            return [{**base_row(c, run_id, env, None), "status": f"skipped:{skipped[c]}"} if skipped[c] else next(rows) for c in group]

        log = RepeatLog(spec.out)
        group = measure_group if spec.interleave_calls else None
        for cell, row in interleaved(cells, spec.process_repeats, measure, log, on_repeat, resume=spec.resume, retry_errors=spec.retry_errors, measure_group=group):
            if row.get("status") == "oom":
                engine.oom.record(cell)
            yield cell, row


def run_sweep(spec: SweepSpec, console: Console | None = None, progress: bool = True, launcher: Any = None) -> SweepResult:
    """Run (or, with ``spec.dry_run``, only print) the sweep; returns what happened.

    ``launcher``: None or local (in this process) or a remote one (:mod:`elastic_bench.runs.launch`);
    either way this process appends every row."""
    console = console or Console(emoji=False)
    plan = make_plan(spec)
    print_plan(plan, console)
    result = SweepResult(Path(spec.out), len(plan.cells), len(plan.cells) - len(plan.todo))
    if spec.dry_run:
        console.print("[dim]--dry-run: nothing measured, nothing written[/]")
        return result
    todo = plan.todo
    t0 = time.perf_counter()
    if todo:
        run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        env = environment(torch.device(spec.device).type)
        threads_before = torch.get_num_threads()
        if spec.threads and spec.device_type == "cpu":
            torch.set_num_threads(spec.threads)
        engine = Engine(spec)
        store = ResultsStore(spec.out)
        store.open()
        bar = make_progress(console, disable=not progress)
        try:
            with bar:
                task = bar.add_task("sweep", total=len(todo), last="")
                if is_remote(launcher):
                    if spec.interleave_calls:
                        console.print(f"[yellow]note:[/] {launcher.describe()} measures each cell in a task of its own: "
                                      "--interleave-calls applies to the local launcher only")  # fmt: skip
                    bar.update(task, description=f"[cyan]{launcher.describe()}[/]")
                    rows = remote_rows(spec, todo, run_id, env, launcher)
                else:
                    heads = set(headline(plan.cells)) if spec.process_repeats > 1 or spec.interleave_calls else set()
                    rows = itertools.chain(
                        _local_rows(engine, [c for c in todo if c not in heads], run_id, env, lambda c: bar.update(task, description=f"[cyan]{c.label()}[/]")),
                        _repeated_rows(engine, [c for c in todo if c in heads], run_id, env, lambda c, r: bar.update(task, description=f"[cyan]{c.label()} (process {r + 1}/{spec.process_repeats})[/]")),
                    )
                for cell, row in rows:
                    store.append(row)
                    result.ran += 1
                    result.statuses[_status_kind(row["status"])] += 1
                    bar.update(task, advance=1, last=f"last: {cell.model} N={cell.seq_len} {_summary(row)}")
        except KeyboardInterrupt:
            result.interrupted = True
            console.print(f"[yellow]interrupted:[/] {result.ran} rows written to {spec.out}; rerun the same command to resume")
            raise
        finally:
            store.close()
            torch.set_num_threads(threads_before)
            result.wall_s = time.perf_counter() - t0
    console.print(
        f"[bold]Done:[/] {result.ran} rows written in {result.wall_s:.1f} s, {result.already_done} cells already done"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(result.statuses.items()))})" if result.statuses else "")
        + f" -> {spec.out}"
    )
    if spec.plot:
        out_dir = default_report_dir(spec.out)
        if result.ran or not out_dir.exists():
            try:
                from ..report.plots import plot_results

                result.plots = plot_results([spec.out], baseline=spec.baseline, out_dir=out_dir)
                n = sum(1 for p in result.plots if p.suffix == ".png")
                console.print(f"plots: {n} figures (PNG + PDF + CSV subset each) in {out_dir}/")
            except Exception as exc:  # noqa: BLE001 - a figure problem must not lose the sweep
                console.print(f"[yellow]plots failed:[/] {type(exc).__name__}: {exc}")
    return result


def _status_kind(status: str) -> str:
    return status.split(":", 1)[0]
