"""Curated (git-tracked) results are not appended to from a dirty source tree unless asked."""

from __future__ import annotations

import subprocess

import pytest

from elastic_bench.grammar import GrammarError
from elastic_bench.store import ResultsStore
from elastic_bench.provenance import ALLOW_DIRTY_ENV, uncommitted_source


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@pytest.fixture()
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    with ResultsStore(tmp_path / "results" / "curated.csv") as st:
        st.append({"model": "softmax", "status": "ok", "config_hash": "h1"})
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_clean_tree_writes_and_outputs_do_not_count_as_dirty(repo):
    with ResultsStore(repo / "results" / "curated.csv") as st:  # the append itself dirties results/
        st.append({"model": "sdpa", "status": "ok", "config_hash": "h2"})
    assert uncommitted_source(repo / "results" / "curated.csv") == []
    with ResultsStore(repo / "results" / "curated.csv") as st:
        st.append({"model": "linear", "status": "ok", "config_hash": "h3"})


def test_dirty_source_refuses_a_curated_file_only(repo, monkeypatch):
    monkeypatch.setenv(ALLOW_DIRTY_ENV, "")  # restored at teardown, even after the CLI sets it
    (repo / "code.py").write_text("x = 2\n")
    with pytest.raises(GrammarError, match=r"curated .* uncommitted changes \(code.py\).*--allow-dirty"):
        ResultsStore(repo / "results" / "curated.csv").open()
    with ResultsStore(repo / "results" / "new.csv") as st:  # an untracked output is not curated
        st.append({"model": "softmax", "status": "ok", "config_hash": "h1"})
    monkeypatch.setenv(ALLOW_DIRTY_ENV, "1")
    with ResultsStore(repo / "results" / "curated.csv") as st:
        st.append({"model": "sdpa", "status": "ok", "config_hash": "h2"})


def test_cli_exit_code_2_and_allow_dirty(repo, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv(ALLOW_DIRTY_ENV, "")  # restored at teardown, even after the CLI sets it
    (repo / "code.py").write_text("x = 3\n")
    out = str(repo / "results" / "curated.csv")
    args = ["sweep", "--models", "softmax", "--seq-len", "16", "--batch", "1", "--n-items", "20", "--repeats", "1", "--min-time", "0", "--no-plot", "--out", out]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "curated" in res.output
    res = CliRunner().invoke(app, args + ["--allow-dirty"])
    assert res.exit_code == 0, res.output
