"""--launcher on the command line: a missing Ray and bad launcher options are one-line errors (exit 2)."""

from __future__ import annotations

from typer.testing import CliRunner

import cli
from elastic_bench.runs.launch import ray_launcher

runner = CliRunner()


def test_launcher_ray_without_ray_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ray_launcher, "ray_missing_reason", lambda: "Ray is not installed")
    for args in (["sweep", "--seq-len", "8", "--models", "softmax"], ["ablate", "experts", "--values", "4", "--data", "synthetic"]):
        res = runner.invoke(cli.app, [*args, "--launcher", "ray", "--out", str(tmp_path / "x.csv")])
        assert res.exit_code == 2, res.output
        assert "Ray is not installed" in res.output and "elastic-bench[distributed]" in res.output
    res = runner.invoke(cli.app, ["sweep", "--seq-len", "8", "--launcher", "slurm", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "accepted: local, ray" in res.output
    res = runner.invoke(cli.app, ["sweep", "--seq-len", "8", "--ray-address", "auto", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "need --launcher ray" in res.output
