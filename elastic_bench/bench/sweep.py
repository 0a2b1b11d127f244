"""The sweep engine: expand a :class:`SweepSpec` into cells, measure each, append a row.

For every cell, in order:

1. already in the output with a final status -> skipped (resumption; ``--no-resume`` reruns);
2. backend not loadable or not usable here (device, dtype, causal, head dim, padding)
   -> ``skipped:<reason>``; a longer sequence of a series that ran out of memory
   -> ``skipped:oom at seq_len=N``;
3. correctness gate (:mod:`.gate`, cached per backend/options/dtype) -> ``incorrect`` and
   never timed when it fails;
4. build the workload (:mod:`.passes`), count FLOPs on the first (untimed) call
   (:mod:`.flops`), warm up, time (:mod:`.timer`), then measure memory in a separate call
   (:mod:`.memory`) -> ``ok``;
5. an out-of-memory error anywhere -> ``oom`` (memory freed, the sweep goes on); any other
   exception -> ``error:<ExceptionType>`` with its message in ``reason``.

Each row is appended and fsync'ed at once (:mod:`.store`), so Ctrl-C loses at most the cell
in flight.  The engine imports no model: backends come from the registry by name.
"""

from __future__ import annotations

import gc
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..attention import prepare_masks
from ..environment import device_name as _device_name
from ..environment import environment
from ..launch import is_remote
from .cells import Cell, backend_info, expand
from .flops import pass_flops
from .grammar import human_int
from .cells import SERVING_PASSES
from .gate import GateResult, check_backend, check_serving, gate_dtype, gate_len
from .memory import measure_memory
from .passes import AUTOGRAD_PASSES, build_workload, mixed_precision, precision
from .repeats import ProcessPerRound, RepeatLog, headline, interleaved, timing_fields
from .spec import SweepSpec
from .store import ResultsStore
from .timer import WARMUP_TIME_S, device_context, time_pass, warm_up
from .workload_mask import workload_mask

PREVIEW_ROWS = 12


def is_oom(exc: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError`` or an allocator's "out of memory" / "can't allocate" error."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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


def base_row(cell: Cell, run_id: str, env: dict[str, str], backend: Any | None) -> dict[str, Any]:
    versions = env["backend_versions"]
    if backend is not None:
        try:
            extra = ";".join(f"{k}={v}" for k, v in backend.versions().items())
        except Exception:  # noqa: BLE001 - versions are informative only
            extra = ""
        versions = ";".join(x for x in (versions, extra) if x)
    opts = dict(cell.options)
    return {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **env,
        "backend_versions": versions,
        "device_name": cell.device_name or env["device_name"],
        "task": cell.task,
        "level": cell.level,
        "model": cell.model,
        "options": ";".join(f"{k}={v}" for k, v in cell.options),
        "causal": cell.causal,
        "objective": cell.objective,
        "loss": cell.loss,
        "pass": cell.pass_,
        "dtype": cell.dtype,
        "precision": precision(cell) if cell.task == "efficiency" else "",
        "batch": cell.batch,
        "seq_len": cell.seq_len,
        "d_model": cell.d_model,
        "heads": cell.heads,
        "layers": cell.layers,
        "n_items": cell.n_items or "",
        "experts": opts.get("experts", ""),
        "memory_size": opts.get("memory_size", ""),
        "topk": opts.get("topk", ""),
        "padding": cell.padding,
        "dropout": cell.dropout,
        "seed": cell.seed,
        "cpu_threads": torch.get_num_threads() if cell.device == "cpu" else "",
        "dataset": f"synthetic:{cell.padding}",
        "config_hash": cell.config_hash(),
    }


class OomSeries:
    """Where each series (a plot line: a cell without its shape) first ran out of memory, so
    that its longer sequences are skipped, not run into the same wall."""

    def __init__(self) -> None:
        self.at: dict[Cell, tuple[int, int]] = {}

    def record(self, cell: Cell) -> None:
        series = cell.series()
        prev = self.at.get(series)
        if prev is None or cell.seq_len < prev[0]:
            self.at[series] = (cell.seq_len, cell.batch * cell.seq_len)

    def skip_reason(self, cell: Cell) -> str | None:
        if cell.series() in self.at:
            n, tokens = self.at[cell.series()]
            if cell.seq_len > n and cell.batch * cell.seq_len >= tokens:
                return f"oom at seq_len={n}"
        return None


class Engine:
    """Measures cells one by one (state: the gate cache and where series ran out of memory)."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.device = torch.device(spec.device)
        self.gates: dict[tuple, GateResult | BaseException] = {}
        self.oom = OomSeries()

    def gate(self, backend: Any, cell: Cell) -> GateResult:
        """The gate of the path ``cell`` times (:mod:`.gate`: its padding, causality, precision
        regime, grad mode, at :func:`.gate.gate_len`), cached on everything the gate depends on."""
        grad = cell.pass_ in AUTOGRAD_PASSES
        autocast = mixed_precision(cell)
        level = cell.level if autocast else "op"  # the level changes only the input dtype under autocast
        dropout = cell.dropout if grad else 0.0  # a training cell's dropout path is gated too
        key = (cell.model, cell.dtype, cell.d_model, cell.heads, cell.causal, cell.options, gate_len(cell.seq_len), cell.padding, grad, autocast, level, dropout > 0, cell.seed)
        result = self._cached(
            key,
            lambda: check_backend(
                backend,
                device=self.device,
                run_dtype=cell.dtype,
                d_model=cell.d_model,
                heads=cell.heads,
                causal=cell.causal,
                options=cell.options,
                seq_len=cell.seq_len,
                seed=cell.seed,
                padding=cell.padding,
                grad=grad,
                autocast=autocast,
                level=level,
                dropout=dropout,
            ),
        )
        if cell.pass_ in SERVING_PASSES and result.ok:
            return self._serving_gate(backend, cell, result)
        return result

    def _cached(self, key: tuple, check: Any) -> GateResult:
        """``check()``'s gate result, computed once per ``key``; an error is cached and re-raised
        (an out-of-memory error is not cached: it is the cell's own outcome)."""
        if key not in self.gates:
            try:
                self.gates[key] = check()
            except Exception as exc:  # noqa: BLE001 - recorded on the row
                if is_oom(exc):
                    raise
                self.gates[key] = exc
        result = self.gates[key]
        if isinstance(result, BaseException):
            raise result
        return result

    def _serving_gate(self, backend: Any, cell: Cell, mechanism: GateResult) -> GateResult:
        """A serving cell: its mechanism passed :func:`.gate.check_backend`; now the serving path it
        times (:func:`.gate.check_serving`), cached on what that depends on."""
        key = ("serving", cell.model, cell.pass_, cell.dtype, cell.d_model, cell.heads, cell.layers, cell.causal, cell.options,
               gate_len(cell.seq_len), cell.padding, cell.seed)  # fmt: skip
        result = self._cached(
            key,
            lambda: check_serving(
                cell.model, device=self.device, run_dtype=cell.dtype,
                precise=gate_dtype(backend, self.device, cell.dtype, cell.causal, cell.d_model // cell.heads, cell.padding != "full"),
                pass_=cell.pass_, d_model=cell.d_model, heads=cell.heads, layers=cell.layers, causal=cell.causal,
                options=cell.options, seq_len=cell.seq_len, seed=cell.seed, padding=cell.padding,
            ),
        )  # fmt: skip
        if not result.ok:
            return result
        return GateResult(True, result.dtype, max(mechanism.max_err, result.max_err), result.tol, detail=result.detail, n=result.n)

    def measure(self, cell: Cell, backend: Any) -> dict[str, Any]:
        """Fields of an ``ok``, ``incorrect`` or ``skipped`` row; raises on OOM and errors.

        ``incorrect`` also when the path the gate checked is not the one that was timed
        (``backend_detail`` differs): the timed numbers are then not evidence and are dropped."""
        spec, device = self.spec, self.device
        try:
            g = self.gate(backend, cell)
        except Exception as exc:  # noqa: BLE001
            if is_oom(exc):
                raise
            return {"status": f"error:{type(exc).__name__}", "reason": f"gate: {exc}"}
        if g.skipped:
            return {"status": f"skipped:{g.reason}"}
        fields: dict[str, Any] = {"gate_dtype": g.dtype, "gate_max_err": g.max_err}
        if not g.ok:
            return {**fields, "status": "incorrect", "reason": g.reason}
        work = build_workload(cell, device)
        try:
            prepare_masks(work.module, workload_mask(work))  # host-side padding decisions: once, untimed
            fields["params"] = work.num_parameters()
            t_flops = time.perf_counter()
            try:
                fields["flops"], fields["flops_method"] = pass_flops(cell, backend, work.run, work.module, work.forward)
                warm = spec.warmup  # the counted call was a real, untimed run of the pass: the first warm-up
                warmed = time.perf_counter() - t_flops
            except Exception as exc:  # noqa: BLE001 - FLOPs are informative; the timing still counts
                if is_oom(exc):
                    raise
                fields["flops_method"] = f"failed:{type(exc).__name__}"
                warm, warmed = max(1, spec.warmup), 0.0
            # warm up by calls and by time (as long as the sampling budget, at most WARMUP_TIME_S),
            # the counted call's time included: a 5 s call needs no second one to warm up
            warm_up(work.run, device, warm, min_time=max(0.0, min(WARMUP_TIME_S, spec.min_time) - warmed))
            t = time_pass(work.run, device, repeats=spec.repeats, min_time=spec.min_time, max_time=spec.max_time)
            timed = work.backend_detail
            if timed != g.detail:
                reason = f"gate: checked path {g.detail!r} (N={g.n}) but timed {timed!r}: the timed path is not gated"
                return {**fields, "status": "incorrect", "backend_detail": timed, "reason": reason}
            work.reset()
            mem = measure_memory(work.run, device, work.resident)
            fields.update(work.fields or {})
            fields.update(
                status="ok",
                backend_detail=timed,
                n_samples=t.n_samples,
                samples_ms=t.samples_ms,  # measure_row turns them into latency_samples_ms and the CI
                timer_mode=t.mode,
                latency_ms_p50=t.p50_ms,
                latency_ms_p20=t.p20_ms,
                latency_ms_p80=t.p80_ms,
                tokens_per_s=cell.batch * cell.seq_len / (t.p50_ms / 1e3) if t.p50_ms > 0 else None,
                peak_mem_mb=mem.peak_mb,
                act_mem_mb=mem.act_mb,
                reserved_mem_mb=mem.reserved_mb,
                mem_method=mem.method,
            )
            return fields
        finally:
            del work
            free_memory(device)

    def run_cell(self, cell: Cell) -> tuple[dict[str, Any], Any]:
        """All outcome fields of ``cell`` (never raises except KeyboardInterrupt/SystemExit).

        Everything runs under ``torch.cuda.device(cell's device)`` (:func:`.timer.device_context`):
        capability checks, the gate, warm-up, timing, memory and every kernel launch."""
        info = backend_info(cell.model)
        if info.cls is None:
            return {"status": f"skipped:{info.load_error}"}, None
        backend = info.cls
        with device_context(self.device):
            why = backend.unavailable_reason(
                self.device,
                _dtype(cell.dtype),
                causal=cell.causal,
                head_dim=cell.d_model // cell.heads,
                padding=cell.padding != "full",
            )
            if why:
                return {"status": f"skipped:{why}"}, backend
            why = self.oom.skip_reason(cell)
            if why:
                return {"status": f"skipped:{why}"}, backend
            try:
                return self.measure(cell, backend), backend
            except Exception as exc:  # noqa: BLE001 - every failure is a row
                fields = self._failure(cell, exc)
                exc.__traceback__ = None  # drop the frames (and their tensors) before freeing memory
            free_memory(self.device)
            return fields, backend

    def _failure(self, cell: Cell, exc: Exception) -> dict[str, Any]:
        if is_oom(exc):
            self.oom.record(cell)
            return {"status": "oom", "reason": str(exc).splitlines()[0][:300] if str(exc) else "out of memory"}
        return {"status": f"error:{type(exc).__name__}", "reason": str(exc)[:500]}


def measure_row(engine: Engine, cell: Cell, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    """The complete results row of one cell (what every launcher appends)."""
    c0 = time.perf_counter()
    fields, backend = engine.run_cell(cell)
    samples = fields.pop("samples_ms", None)
    if samples:  # one process: one repeat group; the latency columns and the CI from the samples
        fields.update(timing_fields([list(samples)]))
    return {**base_row(cell, run_id, env, backend), **fields, "wall_s": round(time.perf_counter() - c0, 3)}


def remote_rows(spec: SweepSpec, todo: list[Cell], run_id: str, env: dict[str, str], launcher: Any) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """``(cell, row)`` as the cells finish on ``launcher``'s workers (in any order).

    Each series of sequence lengths is one group (run in order), so that after an
    out-of-memory the driver skips the series' longer lengths as the local engine does.
    """
    from ..launch import Job
    from .remote_tasks import efficiency_task

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


def _dtype(name: str) -> torch.dtype:
    from ..attention import DTYPE_NAMES

    return DTYPE_NAMES[name]


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
    """Headline cells: ``process_repeats`` interleaved runs, each in a fresh process (:mod:`.repeats`)."""
    spec = engine.spec
    with ProcessPerRound() as workers:

        def measure(cell: Cell, rnd: int) -> dict[str, Any]:
            why = engine.oom.skip_reason(cell)
            if why:
                return {**base_row(cell, run_id, env, None), "status": f"skipped:{why}"}
            return workers.measure((spec, cell, run_id, env), rnd)

        log = RepeatLog(spec.out)
        for cell, row in interleaved(cells, spec.process_repeats, measure, log, on_repeat, resume=spec.resume, retry_errors=spec.retry_errors):
            if row.get("status") == "oom":
                engine.oom.record(cell)
            yield cell, row


def run_sweep(spec: SweepSpec, console: Console | None = None, progress: bool = True, launcher: Any = None) -> SweepResult:
    """Run (or, with ``spec.dry_run``, only print) the sweep; returns what happened.

    ``launcher``: None or local (in this process) or a remote one (:mod:`elastic_bench.launch`);
    either way this process appends every row."""
    console = console or Console()
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
                    bar.update(task, description=f"[cyan]{launcher.describe()}[/]")
                    rows = remote_rows(spec, todo, run_id, env, launcher)
                else:
                    heads = set(headline(plan.cells)) if spec.process_repeats > 1 else set()
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
                from .plots import plot_results

                result.plots = plot_results([spec.out], baseline=spec.baseline, out_dir=out_dir)
                n = sum(1 for p in result.plots if p.suffix == ".png")
                console.print(f"plots: {n} figures (PNG + PDF + CSV subset each) in {out_dir}/")
            except Exception as exc:  # noqa: BLE001 - a figure problem must not lose the sweep
                console.print(f"[yellow]plots failed:[/] {type(exc).__name__}: {exc}")
    return result


def _status_kind(status: str) -> str:
    return status.split(":", 1)[0]


def default_report_dir(csv_path: str | Path) -> Path:
    """``results/x.csv`` -> ``reports/x`` (beside ``results/``'s parent)."""
    return Path("reports") / Path(csv_path).stem
