"""The Triton preflight (``kernels/preflight.py``) and its use by ``scripts/gpu_check_kernels.py``.

The launcher build is real here (this machine has a C compiler and ``Python.h``); its
failures are made by hiding the compiler (``shutil.which`` finds nothing, ``CC`` unset) or
the headers (``sysconfig`` points at an empty folder).  The kernel-launch step needs a GPU
or the interpreter, so it is not exercised here (``tests/test_kernels.py`` runs kernels).
The module is loaded by a fixture, not at collection: importing triton before
``tests/test_kernels.py`` switches the interpreter on would send that file to a subprocess.
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from elastic_bench.elastic import kernels

ROOT = Path(__file__).resolve().parent.parent
HAS_CC = shutil.which("gcc") or shutil.which("clang")


@pytest.fixture()
def preflight():
    pytest.importorskip("triton", reason="triton is not installed (optional dev dependency, Linux only)")
    return kernels.load("preflight")


def hide_compiler(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)


@pytest.mark.skipif(not HAS_CC, reason="needs gcc or clang")
def test_launcher_builds_here(preflight):
    if not (Path(preflight.python_include_dir()) / "Python.h").is_file():
        pytest.skip("no Python.h here")
    assert preflight.launcher_build_reason() == ""


def test_no_compiler_is_a_one_line_reason(preflight, monkeypatch):
    hide_compiler(monkeypatch)
    why = preflight.launcher_build_reason()
    assert why == "Triton cannot build its launcher: no C compiler (set CC, or install gcc or clang)"


@pytest.mark.skipif(not HAS_CC, reason="needs gcc or clang")
def test_no_python_headers_is_a_one_line_reason(preflight, monkeypatch, tmp_path):
    real = sysconfig.get_paths

    def paths(*a, **k):
        return {**real(*a, **k), "include": str(tmp_path)}  # an include folder without Python.h

    monkeypatch.setattr(sysconfig, "get_paths", paths)
    why = preflight.launcher_build_reason()
    assert why.startswith(f"Triton cannot build its launcher: no Python.h in {tmp_path}") and "\n" not in why


def test_preflight_stops_at_the_launcher(preflight, monkeypatch):
    """Compiled mode (not the interpreter): a missing compiler is reported before any kernel is tried."""
    hide_compiler(monkeypatch)
    monkeypatch.setattr(preflight, "INTERPRETED", False)
    monkeypatch.setattr(preflight, "kernel_launch_reason", lambda device: pytest.fail("a kernel was launched"))
    assert "no C compiler" in preflight.preflight("cuda")
    assert preflight.main(["--device", "cuda"]) == preflight.EXIT_CODE


def load_check_script():
    spec = importlib.util.spec_from_file_location("gpu_check_kernels", ROOT / "scripts" / "gpu_check_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_fails_fast_without_a_compiler(preflight, monkeypatch, tmp_path, capsys):
    """On a 'GPU' machine without a C compiler the script exits 3 with one line, and writes
    nothing: no section ran, no CSV exists."""
    script = load_check_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the script drops it for the GPU; restored afterwards
    hide_compiler(monkeypatch)
    monkeypatch.setattr(script, "sections_in_order", lambda *a: pytest.fail("a section ran"))
    monkeypatch.setattr(kernels, "load", lambda name: preflight)  # the compiled-mode module (this one)
    monkeypatch.setattr(preflight, "INTERPRETED", False)
    rc = script.main(["--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == script.PREFLIGHT_EXIT == 3
    assert err == ["preflight failed: Triton cannot build its launcher: no C compiler (set CC, or install gcc or clang)"]
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_runs_the_model_section_before_the_op_section():
    script = load_check_script()
    names = [name for name, _ in script.sections_in_order(None, [])]
    assert names == ["env", "check", "model", "op"]
