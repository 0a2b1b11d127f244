"""Measuring one cell: :class:`Engine` gates, times and meters a cell, :func:`measure_row`
makes its results row.

For one cell (:meth:`Engine.run_cell`):

1. backend not loadable or not usable here (device, dtype, causal, head dim, padding)
   -> ``skipped:<reason>``; a longer sequence of a series that ran out of memory
   -> ``skipped:oom at seq_len=N``;
2. correctness gate (:mod:`.gate`, cached per backend/options/dtype) -> ``incorrect`` and
   never timed when it fails;
3. build the workload (:mod:`.passes`), count FLOPs on the first (untimed) call
   (:mod:`.flops`), warm up, time (:mod:`.timer`), then measure memory in a separate call
   (:mod:`.memory`) -> ``ok``;
4. an out-of-memory error anywhere -> ``oom`` (memory freed); any other exception ->
   ``error:<ExceptionType>`` with its message in ``reason``.

Several cells at once (:meth:`Engine.measure_group`, a sweep's ``interleave_calls``): steps 1
to 3 up to the warm-up for each cell, then all their passes timed call by call together
(:func:`.timer.time_interleaved`), then each cell's memory on a workload of its own, alone.

The engine reads its sampling settings (``device``, ``warmup``, ``repeats``, ``min_time``,
``max_time``) from a sweep's spec (:class:`~elastic_bench.runs.spec.SweepSpec`, or anything
with those attributes: :class:`Settings`).  It imports no model: backends come from the
registry by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import torch

from ..attention import prepare_masks
from ..environment import free_memory, is_oom
from .cell import SERVING_PASSES, Cell, backend_info
from .flops import pass_flops
from .gate import GateResult, check_backend, check_serving, gate_dtype, gate_len
from .memory import measure_memory
from .passes import AUTOGRAD_PASSES, Workload, build_workload, mixed_precision, precision
from .samples import timing_fields
from .steady_heap import steady_heap
from .timer import WARMUP_TIME_S, Timing, device_context, time_interleaved, time_pass, warm_up
from .workload_mask import workload_mask


class Settings(Protocol):
    """What :class:`Engine` reads of a sweep's spec."""

    device: str
    warmup: int
    repeats: int
    min_time: float
    max_time: float


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


@dataclass
class Ready:
    """A cell gated, built and warmed up (:meth:`Engine.prepare`): what timing needs."""

    cell: Cell
    work: Workload
    gate: GateResult
    fields: dict[str, Any]  # gate, parameter and FLOP fields so far


class _CallFailed(Exception):
    """A pass failed during interleaved timing: which one (its index in the group) and why."""

    def __init__(self, index: int, exc: Exception):
        super().__init__(str(exc))
        self.index, self.exc = index, exc


class _Tagged:
    """``fn`` that raises :class:`_CallFailed` naming ``index`` when it fails."""

    def __init__(self, index: int, fn: Any):
        self.index, self.fn = index, fn

    def __call__(self) -> Any:
        try:
            return self.fn()
        except Exception as exc:  # noqa: BLE001 - re-raised with the cell it belongs to
            raise _CallFailed(self.index, exc) from None


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

    def __init__(self, spec: Settings):
        self.spec = spec
        self.device = torch.device(spec.device)
        self.gates: dict[tuple, GateResult | BaseException] = {}
        self.oom = OomSeries()
        if self.device.type != "cuda":
            steady_heap()  # before any model is built: no cell times its allocator's history (.steady_heap)

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
        ready = self.prepare(cell, backend)
        if not isinstance(ready, Ready):
            return ready
        try:
            spec = self.spec
            t = time_pass(ready.work.run, self.device, repeats=spec.repeats, min_time=spec.min_time, max_time=spec.max_time)
            return self.finish(ready, t)
        finally:
            del ready
            free_memory(self.device)

    def prepare(self, cell: Cell, backend: Any) -> "Ready | dict[str, Any]":
        """Gate ``cell``, build its workload, count its FLOPs and warm it up: a :class:`Ready`
        to time, or the fields of a row that ends here (``skipped``, ``incorrect``, a gate error).
        Raises on OOM and on errors after the gate (the workload is freed first)."""
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
        except BaseException:
            work = None  # type: ignore[assignment] - drop the workload before freeing memory
            free_memory(device)
            raise
        return Ready(cell, work, g, fields)

    def finish(self, ready: "Ready", t: Timing) -> dict[str, Any]:
        """The fields of a timed cell (:meth:`timed_fields`), with its memory measured in a call of
        its own on the timed workload, its gradients dropped first."""
        fields = self.timed_fields(ready, t)
        if fields["status"] == "ok":
            fields.update(self.memory_fields(ready.work))
        return fields

    def timed_fields(self, ready: "Ready", t: Timing) -> dict[str, Any]:
        """``incorrect`` when the timed path is not the gated one, else ``ok`` with timing ``t``
        (memory not yet measured)."""
        cell, work, g, fields = ready.cell, ready.work, ready.gate, dict(ready.fields)
        timed = work.backend_detail
        if timed != g.detail:
            reason = f"gate: checked path {g.detail!r} (N={g.n}) but timed {timed!r}: the timed path is not gated"
            return {**fields, "status": "incorrect", "backend_detail": timed, "reason": reason}
        fields.update(work.fields or {})
        fields.update(
            status="ok",
            # a train_step row names its optimiser after the path (elastic_bench.optimizers), outside
            # the match keys: a sparse bank's SparseAdam is what its row is compared for
            backend_detail=timed + (f"; optimizer {work.optimizer.implementation}" if work.optimizer is not None else ""),
            n_samples=t.n_samples,
            samples_ms=t.samples_ms,  # measure_row turns them into latency_samples_ms and the CI
            timer_mode=t.mode,
            latency_ms_p50=t.p50_ms,
            latency_ms_p20=t.p20_ms,
            latency_ms_p80=t.p80_ms,
            tokens_per_s=cell.batch * cell.seq_len / (t.p50_ms / 1e3) if t.p50_ms > 0 else None,
        )
        return fields

    def memory_fields(self, work: Workload) -> dict[str, Any]:
        """Peak and activation memory of one call of ``work`` (:mod:`.memory`), gradients dropped first."""
        work.reset()
        mem = measure_memory(work.run, self.device, work.resident)
        return dict(peak_mem_mb=mem.peak_mb, act_mem_mb=mem.act_mb, reserved_mem_mb=mem.reserved_mb, mem_method=mem.method)

    def measure_group(self, cells: list[Cell]) -> list[tuple[dict[str, Any], Any]]:
        """:meth:`run_cell` for several cells at once, their passes timed call by call together
        (:func:`.timer.time_interleaved`); one ``(fields, backend)`` per cell, in order.

        Every cell is gated, built and warmed up as alone, then all are timed interleaved.  A cell
        whose call fails during the interleaved timing gets its failure row, and the others are
        timed again without it.  Then the workloads are freed, and each cell's memory is measured
        on a workload of its own, built and warmed up again with nothing else alive (on CUDA the
        allocator's baseline would otherwise count the other cells' tensors)."""
        out: list[tuple[dict[str, Any], Any] | None] = [None] * len(cells)
        ready: dict[int, Ready] = {}
        with device_context(self.device):
            try:
                for i, cell in enumerate(cells):
                    fields, backend = self._precheck(cell)
                    if fields is None:
                        try:
                            got = self.prepare(cell, backend)
                        except Exception as exc:  # noqa: BLE001 - every failure is a row
                            got = self._group_failure(cell, exc, len(ready) + 1)
                            exc.__traceback__ = None
                        if isinstance(got, Ready):
                            ready[i] = got
                        else:
                            fields = got
                            free_memory(self.device)  # after the except block: its traceback is gone
                        got = None  # the ready workloads live in ``ready`` only: freed before memory
                    out[i] = (fields, backend)
                self._time_together(ready, out)
            finally:
                ready.clear()
                free_memory(self.device)
            for i, cell in enumerate(cells):
                fields, backend = out[i]  # type: ignore[misc]
                if fields.get("status") == "ok":
                    out[i] = (self._alone_memory(cell, fields), backend)
        return out  # type: ignore[return-value]

    def _time_together(self, ready: dict[int, "Ready"], out: list) -> None:
        """Time the ready cells interleaved.  A cell whose call fails leaves with its failure row
        and the others are timed again without it; any other failure (an asynchronous CUDA error
        surfacing at a synchronisation, which no call owns) is every remaining cell's row."""
        spec = self.spec
        while ready:
            order = list(ready)
            fns = [_Tagged(i, ready[i].work.run) for i in order]
            failed: _CallFailed | None = None
            try:
                timings = time_interleaved(fns, self.device, repeats=spec.repeats, min_time=spec.min_time, max_time=spec.max_time)
            except _CallFailed as exc:
                failed = exc
                failed.__traceback__ = None  # its frames hold every workload of the group
            except Exception as exc:  # noqa: BLE001 - every failure is a row
                for i in order:
                    out[i] = (self._group_failure(ready[i].cell, exc, len(order)), out[i][1])
                exc.__traceback__ = None
                ready.clear()
                return
            if failed is not None:
                r = ready.pop(failed.index)
                out[failed.index] = (self._group_failure(r.cell, failed.exc, len(order)), out[failed.index][1])
                failed.exc.__traceback__ = None
                del r, fns, failed
                free_memory(self.device)
                continue
            for i, t in zip(order, timings):
                out[i] = (self.timed_fields(ready[i], t), out[i][1])
            return

    def _group_failure(self, cell: Cell, exc: Exception, alive: int) -> dict[str, Any]:
        """:meth:`_failure`, saying when an out-of-memory error came with other cells' workloads alive."""
        fields = self._failure(cell, exc)
        if fields["status"] == "oom" and alive > 1:
            fields["reason"] = f"{fields['reason']} (with the workloads of {alive - 1} other interleaved cell(s) alive)"
        return fields

    def _alone_memory(self, cell: Cell, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with the memory of ``cell`` measured on a fresh workload, warmed up, alone."""
        work = None
        try:
            work = build_workload(cell, self.device)
            prepare_masks(work.module, workload_mask(work))
            warm_up(work.run, self.device, max(1, self.spec.warmup), min_time=0.0)
            return {**fields, **self.memory_fields(work)}
        except Exception as exc:  # noqa: BLE001 - every failure is a row
            failure = self._failure(cell, exc)
            exc.__traceback__ = None
            return {**fields, **failure, "reason": f"memory pass: {failure.get('reason', '')}"}
        finally:
            del work
            free_memory(self.device)

    def _precheck(self, cell: Cell) -> tuple[dict[str, Any] | None, Any]:
        """``(fields, backend)``: the fields of a row that ends before the gate (backend not
        loadable or not usable here, a longer sequence of a series that ran out of memory), or
        ``None`` and the backend to measure."""
        info = backend_info(cell.model)
        if info.cls is None:
            return {"status": f"skipped:{info.load_error}"}, None
        backend = info.cls
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
        return None, backend

    def run_cell(self, cell: Cell) -> tuple[dict[str, Any], Any]:
        """All outcome fields of ``cell`` (never raises except KeyboardInterrupt/SystemExit).

        Everything runs under ``torch.cuda.device(cell's device)`` (:func:`.timer.device_context`):
        capability checks, the gate, warm-up, timing, memory and every kernel launch."""
        with device_context(self.device):
            fields, backend = self._precheck(cell)
            if fields is not None:
                return fields, backend
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
    return _row(cell, run_id, env, fields, backend, time.perf_counter() - c0)


def measure_rows_interleaved(engine: Engine, cells: list[Cell], run_id: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """The rows of ``cells``, their passes timed together (:meth:`Engine.measure_group`); each
    row's ``wall_s`` is the group's wall time shared evenly."""
    c0 = time.perf_counter()
    results = engine.measure_group(cells)
    share = (time.perf_counter() - c0) / max(1, len(cells))
    return [_row(cell, run_id, env, fields, backend, share) for cell, (fields, backend) in zip(cells, results)]


def _row(cell: Cell, run_id: str, env: dict[str, str], fields: dict[str, Any], backend: Any, wall_s: float) -> dict[str, Any]:
    fields = dict(fields)
    samples = fields.pop("samples_ms", None)
    if samples:  # one process: one repeat group; the latency columns and the CI from the samples
        fields.update(timing_fields([list(samples)]))
    return {**base_row(cell, run_id, env, backend), **fields, "wall_s": round(wall_s, 3)}


def _dtype(name: str) -> torch.dtype:
    from ..attention import DTYPE_NAMES

    return DTYPE_NAMES[name]
