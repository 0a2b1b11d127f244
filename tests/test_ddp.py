"""Multi-process (DistributedDataParallel) training on the CPU (gloo): `elastic-bench train --nproc 2`
gives the metrics of one process, evaluation sharded over ranks is exact, bad --nproc is refused.

About 15 s on 2 cores, most of it the start of 2 + 2 Python processes with torch."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

import cli
from elastic_bench.data.resolve import load_dataset
from elastic_bench.data.splits import leave_one_out
from elastic_bench.metrics import metrics_from_ranks
from elastic_bench.recommender import ModelConfig, SeqRecModel
from elastic_bench.train import distributed
from elastic_bench.train.evaluate import Protocol, evaluate, target_ranks_of

runner = CliRunner()
DATA = "synthetic:n_users=200,n_items=50,lengths=fixed:12,seed=0"
TRAIN = ["train", "--data", DATA, "--d-model", "16", "--max-len", "12", "--epochs", "2", "--loss", "full", "--dropout", "0",
         "--batch-size", "32", "--patience", "0", "--device", "cpu"]  # fmt: skip
# dropout 0 and the full softmax: one process and two differ only by the order of float sums
# (measured: identical metrics, epoch losses within 2e-7)
METRIC_TOL = 1e-3


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread here, as each of the 2 workers gets (OMP_NUM_THREADS = 2 cores // 2): on
    a busy 2-core machine two threads make these runs 10x slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_nproc_2_gives_the_metrics_of_one_process(tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    res = runner.invoke(cli.app, TRAIN + ["--out", str(one), "--nproc", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.app, TRAIN + ["--out", str(two), "--nproc", "2"])  # torchrun, 2 gloo processes
    assert res.exit_code == 0, res.output
    (r1,), rows2 = _rows(one), _rows(two)
    assert len(rows2) == 1  # rank 0 alone writes
    (r2,) = rows2
    assert r2["config_hash"] == r1["config_hash"]  # the world size is not part of what defines a result
    assert "ddp=2" in r2["reason"] and "ddp" not in r1["reason"]
    for k in ("hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200"):
        assert float(r2[k]) == pytest.approx(float(r1[k]), abs=METRIC_TOL), k
    (j1,), (j2,) = (list(tmp_path.glob(f"{stem}-*.json")) for stem in ("one", "two"))
    h1, h2 = (json.loads(p.read_text()) for p in (j1, j2))
    assert (h1["world_size"], h2["world_size"]) == (1, 2)
    assert [h["loss"] for h in h2["history"]] == pytest.approx([h["loss"] for h in h1["history"]], rel=1e-5)


@pytest.mark.parametrize("n", ["0", "-1"])
def test_nproc_below_1_is_one_error_line(n, tmp_path):
    res = runner.invoke(cli.app, TRAIN + ["--out", str(tmp_path / "x.csv"), "--nproc", n])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--nproc" in lines[0], res.output
    assert not (tmp_path / "x.csv").exists()


def test_launch_command_and_threads():
    cmd = distributed.launch_command(4, ["--epochs", "2"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "elastic_bench.train", "--epochs", "2"]
    assert distributed.launch_env(2, {})["OMP_NUM_THREADS"] == str(max(1, distributed.cpu_count() // 2))
    assert distributed.launch_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice stays
    assert distributed.dist_info() == (0, 1, 0) and distributed.is_main()
    assert list(distributed.shard(range(7), 1, 3)) == [1, 4] and distributed.shard([1, 2], 0, 1) == [1, 2]


# ---- sharded evaluation ---------------------------------------------------------------------

PROTOCOLS = [(Protocol(), "none"), (Protocol(), "input"), (Protocol.parse("sampled:20:pop"), "none")]


def _eval_fixture():
    torch.manual_seed(0)
    ds = load_dataset(DATA)
    split = leave_one_out(ds, 12)
    hist = [s[:-2] for s in (ds.sequences[u] for u in split.valid.users)]
    model = SeqRecModel(ModelConfig("softmax", n_items=ds.n_items, max_len=12, d_model=16, heads=2, layers=1, dropout=0.0))
    return model, split.valid, hist, ds.item_counts()


def _eval_all(model, es, hist, counts, **kw):
    return [evaluate(model, es, hist, p, batch_size=16, exclude_history=x, item_counts=counts, seed=3, **kw) for p, x in PROTOCOLS]


def test_sharded_target_ranks_combine_to_the_unsharded_ones():
    model, es, hist, counts = _eval_fixture()
    for p, x in PROTOCOLS:
        full = target_ranks_of(model, es, hist, p, 16, x, counts, seed=3)
        parts = [target_ranks_of(model, es, hist, p, 16, x, counts, seed=3, rank=r, world=3) for r in range(3)]
        assert all((part != 0).any() for part in parts)  # every rank had users to score
        np.testing.assert_array_equal(sum(parts), full)
        assert metrics_from_ranks(sum(parts)) == metrics_from_ranks(full)


def _eval_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model, es, hist, counts = _eval_fixture()
        with open(f"{out}.{rank}", "w") as fh:
            json.dump(_eval_all(model, es, hist, counts), fh)  # rank/world from the process group
    finally:
        dist.destroy_process_group()


def test_evaluation_sharded_over_2_gloo_processes_is_exact(tmp_path):
    mp.spawn(_eval_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "metrics")), nprocs=2)
    model, es, hist, counts = _eval_fixture()
    expected = _eval_all(model, es, hist, counts)
    for rank in range(2):
        assert json.loads((tmp_path / f"metrics.{rank}").read_text()) == expected  # every rank, bit for bit
