"""--launcher ray: same rows as the local launcher, resumption after a killed driver, worker loss.

One local Ray (2 CPUs) is started for the module; the CLI runs in subprocesses join it with
--ray-address.  Skipped with the reason where Ray is not installed (pip install '.[distributed]').
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from elastic_bench.runs.accuracy import run_accuracy_sweep
from elastic_bench.runs.accuracy_spec import accuracy_spec
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import ResultsStore
from elastic_bench.runs.sweep import run_sweep
from elastic_bench.runs.launch import Job, get_launcher

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[distributed]')")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(device="cpu", d_model=16, heads=2, layers=1, n_items=50, repeats=2, min_time=0, warmup=0, plot=False, threads=1, process_repeats=1, causal="yes")
# what must agree between launchers: everything but timings, memory readings and provenance
SAME = ("config_hash", "status", "model", "seq_len", "batch", "options", "params", "flops", "flops_method", "gate_dtype", "backend_detail", "cpu_threads")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _by_hash(path) -> dict[str, dict[str, str]]:
    rows = ResultsStore(path).rows()
    hashes = [r["config_hash"] for r in rows]
    assert len(hashes) == len(set(hashes)), "duplicate rows"
    return {r["config_hash"]: r for r in rows}


def test_ray_efficiency_sweep_gives_the_local_rows(tmp_path, cluster):
    grid = dict(seq_len="8,16", tokens_per_batch="32", models="softmax,linear,elastic,elastic-causal", experts="4", memory_size="16", causal="auto")
    local = load_spec({**TINY, **grid, "out": str(tmp_path / "local.csv")})
    remote = load_spec({**TINY, **grid, "out": str(tmp_path / "ray.csv")})
    run_sweep(local, _quiet(), progress=False)
    with get_launcher("ray", ray_address=cluster) as launcher:
        res = run_sweep(remote, _quiet(), progress=False, launcher=launcher)
    a, b = _by_hash(local.out), _by_hash(remote.out)
    assert a.keys() == b.keys() and res.ran == len(a) == 12  # softmax, linear x 2 causalities, elastic, elastic-causal; 2 lengths
    for h in a:
        assert {k: a[h][k] for k in SAME} == {k: b[h][k] for k in SAME}
        assert a[h]["status"] == "ok" and float(b[h]["latency_ms_p50"]) > 0
    assert run_sweep(remote, _quiet(), progress=False, launcher=get_launcher("ray", ray_address=cluster)).ran == 0  # resumes


def test_ray_accuracy_sweep_gives_the_local_metrics(tmp_path, cluster):
    args = dict(models="softmax,elastic", experts="4", memory_size="16", seeds="0", epochs=1, d_model="16", device="cpu", plot=False,
                data="synthetic:n_users=80,n_items=40,lengths=uniform:6..12,seed=1")  # fmt: skip
    local = accuracy_spec(**args, out=str(tmp_path / "local.csv"))
    remote = accuracy_spec(**args, out=str(tmp_path / "ray.csv"))
    run_accuracy_sweep(local, _quiet(), progress=False)
    with get_launcher("ray", ray_address=cluster) as launcher:
        res = run_accuracy_sweep(remote, _quiet(), progress=False, launcher=launcher)
    a, b = _by_hash(local.out), _by_hash(remote.out)
    assert a.keys() == b.keys() and res.ran == 2 and res.statuses == {"ok": 2}
    for h in a:
        for k in ("hr@10", "ndcg@10", "mrr@10"):  # same seed; only the thread count may differ (float summation order)
            assert float(b[h][k]) == pytest.approx(float(a[h][k]), abs=0.02), (k, a[h]["model"])


def _crash_or_square(x: int) -> dict:
    if x < 0:
        os._exit(3)  # the worker process dies: Ray retries once, then it is lost
    return {"status": "ok", "value": x * x}


def test_a_dead_worker_is_retried_then_lost_and_groups_run_in_order(cluster):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this test module is not importable on workers
    launcher = get_launcher("ray", ray_address=cluster)
    jobs = [Job("a", 2, group="g"), Job("b", 3, group="g"), Job("c", -1), Job("d", 4, group="h"), Job("e", 5, group="h")]
    seen = []
    outs = {o.job.key: o for o in launcher.run(_crash_or_square, jobs, skip=lambda j: "oom at seq_len=4" if j.key == "e" else None) if not seen.append(o.job.key)}
    assert outs["a"].row == {"status": "ok", "value": 4} and outs["b"].row["value"] == 9 and outs["d"].row["value"] == 16
    assert outs["c"].row is None and outs["c"].status == "worker-lost" and "retry" in outs["c"].reason
    assert outs["e"].status == "skipped:oom at seq_len=4"
    assert seen.index("a") < seen.index("b") and seen.index("d") < seen.index("e")  # a group runs in order


def test_cells_no_node_can_run_are_skipped_not_hung(cluster):
    launcher = get_launcher("ray", ray_address=cluster)
    gpu, cpus = launcher.run(_crash_or_square, [Job("g", 1, num_gpus=1), Job("c", 1, num_cpus=3)])
    assert gpu.row is None and gpu.status.startswith("skipped:no node of the Ray cluster has 1 GPU")
    assert cpus.row is None and cpus.status.startswith("skipped:no node of the Ray cluster has 3 CPUs")


def _timed(x: int) -> dict:
    start = time.monotonic()
    time.sleep(0.3)
    return {"status": "ok", "start": start, "end": time.monotonic()}


def test_a_group_never_runs_two_jobs_at_once_even_after_a_skip(cluster):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    launcher = get_launcher("ray", ray_address=cluster)
    jobs = [Job(k, 0, group="g") for k in "abcd"]
    outs = {o.job.key: o for o in launcher.run(_timed, jobs, skip=lambda j: "oom at seq_len=8" if j.key == "b" else None)}
    assert outs["b"].status == "skipped:oom at seq_len=8"
    assert outs["a"].row["end"] <= outs["c"].row["start"] and outs["c"].row["end"] <= outs["d"].row["start"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import cli; cli.main()", *args]


def test_killed_driver_resumes_with_no_duplicates(tmp_path, cluster):
    out = tmp_path / "kill.csv"
    cmd = _cli(
        "sweep", "--launcher", "ray", "--ray-address", cluster, "--seq-len", "8,16,32", "--batch", "2", "--models", "softmax,linear,sdpa", "--causal", "yes",
        "--d-model", "16", "--layers", "1", "--n-items", "50", "--repeats", "3", "--min-time", "0.4", "--warmup", "0", "--device", "cpu",
        "--no-plot", "--out", str(out),
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and len(ResultsStore(out).rows()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _by_hash(out)
    assert 2 <= len(first) < 9  # finished cells were kept; the grid is not complete
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-800:]
    final = _by_hash(out)  # asserts no duplicates
    assert len(final) == 9 and set(first) <= set(final)
    assert all(r["status"] == "ok" for r in final.values())


def test_launcher_errors_are_one_line():
    with pytest.raises(ValueError, match="accepted: local, ray"):
        get_launcher("slurm")
    with pytest.raises(ValueError, match="need --launcher ray"):
        get_launcher("local", ray_address="auto")
    with pytest.raises(ValueError, match="--ray-cpus 0"):
        get_launcher("ray", ray_cpus=0)
