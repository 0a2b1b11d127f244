"""The correctness gate checks the path a cell times: its padding, length, grad mode and dtype."""

from __future__ import annotations

import copy
import dataclasses
import io

import torch
from rich.console import Console

from bench_fakes import ExactAttention, FakeExact, registered
from elastic_bench import registry
from elastic_bench.attention import Backend, Capabilities
from elastic_bench.runs.grid import expand
from elastic_bench.measure.gate import GATE_LEN, check_backend, gate_len
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import ResultsStore
from elastic_bench.measure.engine import Engine
from elastic_bench.runs.sweep import run_sweep

CPU = torch.device("cpu")
TINY = dict(device="cpu", d_model=16, heads=2, layers=1, n_items=50, repeats=2, min_time=0, warmup=0, plot=False, causal="yes", process_repeats=1)


class RecordingAttention(ExactAttention):
    """Exact attention that records every call and names what a fast path could depend on."""

    calls: list[dict] = []

    def attend(self, q, k, v, mask):
        RecordingAttention.calls.append(
            dict(n=q.shape[-2], b=q.shape[0], padded=bool(self.plan_for(mask)), grad=torch.is_grad_enabled() and q.requires_grad, dtype=q.dtype)
        )
        out = super().attend(q, k, v, mask)
        self.backend_detail = f"tiles={'many' if q.shape[-2] >= 256 else 'one'},grad={torch.is_grad_enabled() and q.requires_grad}"
        return out


class BatchDetailAttention(ExactAttention):
    """Takes another path for other batch sizes (so the gate's batch of 2 is not the timed path)."""

    def attend(self, q, k, v, mask):
        out = super().attend(q, k, v, mask)
        self.backend_detail = f"b={q.shape[0]}"
        return out


class Float64InsideAttention(ExactAttention):
    """Rounds nothing but its weights and inputs: computes in float64 whatever its dtype."""

    def forward(self, x, mask, kv=None):
        return ExactAttention.reference(copy.deepcopy(self).double(), x.double(), mask)


class FakeF64Inside(Backend):
    name = "fake-f64-inside"
    summary = "exact arithmetic on rounded weights and inputs (test)"
    capabilities = Capabilities()
    module = Float64InsideAttention


class DropoutPathAttention(ExactAttention):
    """Takes another kernel when it trains with dropout (as CPU SDPA leaves flash for math)."""

    def attend(self, q, k, v, mask):
        out = super().attend(q, k, v, mask)
        self.backend_detail = "dropout-path" if self.training and self.dropout_p > 0 else "plain"
        return out


class FakeDropoutPath(Backend):
    name = "fake-dropout-path"
    summary = "path depends on dropout (test)"
    capabilities = Capabilities()
    module = DropoutPathAttention


class FakeRecording(Backend):
    name = "fake-recording"
    summary = "records its calls (test)"
    capabilities = Capabilities()
    module = RecordingAttention


class FakeBatchDetail(Backend):
    name = "fake-batch-detail"
    summary = "path depends on the batch (test)"
    capabilities = Capabilities()
    module = BatchDetailAttention


class FakeNoPad(Backend):
    """Like the CUDA flash kernel: declares masks, but refuses padding (only unpadded rows)."""

    name = "fake-nopad"
    summary = "refuses padding (test)"
    capabilities = Capabilities()
    module = ExactAttention

    @classmethod
    def unavailable_reason(cls, device="cpu", dtype=torch.float32, causal=None, head_dim=None, padding=False):
        if padding:
            return "takes no padding mask (fake)"
        return super().unavailable_reason(device, dtype, causal, head_dim, padding)


FAKES = (FakeExact, FakeRecording, FakeBatchDetail, FakeNoPad, FakeF64Inside, FakeDropoutPath)


def sweep_rows(tmp_path, **kw):
    s = load_spec({**TINY, "out": str(tmp_path / "r.csv"), **kw})
    run_sweep(s, Console(file=io.StringIO(), width=120), progress=False)
    return ResultsStore(s.out).rows()


def gate(name, **kw):
    args = dict(device=CPU, run_dtype="fp32", d_model=16, heads=2, causal=True, options=(), seq_len=64)
    return check_backend(registry.get(name), **{**args, **kw})


def test_a_backend_that_refuses_padding_is_gated_unpadded_when_the_cell_is(tmp_path):
    """sdpa-flash on CUDA: padding refused, the cell unpadded -> gated and timed, not 'incorrect'."""
    with registered(*FAKES):
        (row,) = sweep_rows(tmp_path, seq_len="16", batch="2", models="fake-nopad", padding="full")
    assert row["status"] == "ok", row["reason"]


def test_cannot_gate_is_skipped_with_its_reason():
    with registered(*FAKES):
        r = gate("fake-nopad", padding="random")
    assert r.skipped and not r.ok and "takes no padding mask (fake)" in r.reason


def test_gate_uses_the_cells_padding_at_a_multi_tile_length():
    with registered(*FAKES):
        for padding, padded in (("full", False), ("random", True)):
            RecordingAttention.calls.clear()
            r = gate("fake-recording", padding=padding, seq_len=4096)
            assert r.ok and r.n == GATE_LEN == 256, r
            assert RecordingAttention.calls and all(c["padded"] == padded and c["n"] == 256 for c in RecordingAttention.calls)
    assert gate_len(100) == 100 and gate_len(10**6) == 256


def test_gate_runs_the_timed_dtype_and_grad_mode():
    with registered(*FAKES):
        RecordingAttention.calls.clear()
        r = gate("fake-recording", run_dtype="bf16", grad=True)
    assert r.ok and r.dtype == "fp64+bf16" and r.detail == "tiles=one,grad=True"
    assert [(c["dtype"], c["grad"]) for c in RecordingAttention.calls] == [(torch.float64, False), (torch.bfloat16, True)]


def test_gate_reference_sees_the_rounded_inputs():
    """A bf16 module whose arithmetic is exact (float64 inside) errs by nothing against the
    float64 reference of its own rounded weights and inputs (by ~4e-3 against unrounded ones)."""
    with registered(*FAKES):
        r = gate("fake-f64-inside", run_dtype="bf16", seq_len=256, padding="random")
    assert r.ok and r.dtype == "fp64+bf16" and r.max_err < 1e-9, r


def test_elastic_with_a_memory_bank_passes_the_bf16_gate_at_64k_slots():
    """Routing in bf16 picked other slots than float64 on the same inputs (error 0.12-0.17)."""
    b = registry.get("elastic")
    opts = tuple(sorted(b.capabilities.options.items()))
    assert dict(opts)["memory_size"] == 65536
    for padding in ("full", "random"):
        r = check_backend(b, device=CPU, run_dtype="bf16", d_model=64, heads=2, causal=False, options=opts, seq_len=256, padding=padding)
        assert r.ok and r.max_err < 2e-2, r


def test_gated_path_must_be_the_timed_path(tmp_path):
    """The gate runs 2 rows; a backend whose path depends on the batch is timed at B=4 on
    another path: that row is 'incorrect' with both paths named, never silently 'ok'."""
    with registered(*FAKES):
        rows = sweep_rows(tmp_path, seq_len="16", batch="2,4", models="fake-batch-detail")
    by = {r["batch"]: r for r in rows}
    assert by["2"]["status"] == "ok" and by["2"]["backend_detail"] == "b=2"
    assert by["4"]["status"] == "incorrect" and "'b=2'" in by["4"]["reason"] and "'b=4'" in by["4"]["reason"]
    assert by["4"]["latency_ms_p50"] == ""


def test_model_level_rows_gate_the_same_path_they_time(tmp_path):
    with registered(*FAKES):
        rows = sweep_rows(tmp_path, seq_len="8,512", batch="1", models="fake-recording", padding="random", **{"pass": "infer,fwd"})
    assert {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    details = {(r["seq_len"], r["pass"]): r["backend_detail"] for r in rows}
    assert details == {
        ("8", "infer"): "tiles=one,grad=False",
        ("8", "fwd"): "tiles=one,grad=True",
        ("512", "infer"): "tiles=many,grad=False",
        ("512", "fwd"): "tiles=many,grad=True",
    }


def test_gate_cache_key_has_padding_and_grad_mode(tmp_path):
    with registered(*FAKES):
        s = load_spec({**TINY, "out": str(tmp_path / "r.csv"), "seq_len": "16", "batch": "2", "models": "fake-exact", "pass": "infer,fwd"})
        engine = Engine(s)
        cells = expand(s)
        cells += [dataclasses.replace(c, padding="random") for c in cells]
        for c in cells:
            engine.gate(registry.get(c.model), c)
    assert len(cells) == 4 and len(engine.gates) == 4


def test_a_training_cell_with_dropout_gates_its_dropout_path(tmp_path):
    with registered(*FAKES):
        assert gate("fake-dropout-path", grad=True, dropout=0.2).detail == "dropout-path"
        assert gate("fake-dropout-path", grad=False, dropout=0.2).detail == "plain"
        rows = sweep_rows(tmp_path, seq_len="16", batch="2", models="fake-dropout-path", dropout="0.2", **{"pass": "infer,fwd"})
    assert {(r["pass"], r["status"], r["backend_detail"]) for r in rows} == {("infer", "ok", "plain"), ("fwd", "ok", "dropout-path")}
