"""The layers of the package (README "Layout"), enforced: the import-linter contract in
pyproject.toml holds, it catches a new arrow that breaks it, nothing imports ``cli``, and no
private name is imported from another package."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("elastic_bench", "baselines")

pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # the module entry point of the installed lint-imports, run on `cwd`'s pyproject.toml and packages
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, timeout=300)


def modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_contract_is_kept() -> None:
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    for name in ("Layers:", "Reporting never imports a model", "Measuring never imports reporting", "No import circles"):
        assert f"{name}" in res.stdout and "BROKEN" not in res.stdout


LAYERS = "Layers: cli > running > reporting > measuring > models > foundations"


@pytest.mark.parametrize(
    "module, arrow, broken",
    [
        ("elastic_bench/measure/timer.py", "from ..report import compare", ["Measuring never imports reporting", LAYERS]),
        ("elastic_bench/report/compare.py", "from ..recommender import SeqRecModel", ["Reporting never imports a model"]),  # below it, yet forbidden
        ("elastic_bench/report/compare.py", "from ..train import config", ["Reporting never imports a model"]),
        ("elastic_bench/data/splits.py", "from ..runs import sweep", [LAYERS]),  # a foundation -> running
        ("elastic_bench/report/latex.py", "from ..runs import figures", [LAYERS, "Reporting never imports a model"]),  # reporting -> running (-> models)
        ("elastic_bench/elastic/imr.py", "from baselines import softmax", [LAYERS]),  # two models: independent
        ("elastic_bench/runs/spec.py", "from . import sweep", ["No import circles between the modules of a stage"]),  # sweep -> spec -> sweep
    ],
)
def test_contract_catches_a_new_arrow(tmp_path: Path, module: str, arrow: str, broken: list[str]) -> None:
    """The same contract on a copy of the packages with one forbidden import added fails."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{arrow}  # noqa\n")
    res = lint_imports(tmp_path)
    assert res.returncode != 0, res.stdout[-2000:]
    for name in broken:
        assert f"{name} BROKEN" in res.stdout, (name, res.stdout[-2000:])
    assert res.stdout.count(" BROKEN") == len(broken), res.stdout[-2000:]


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, names)`` of every ``from X import ...`` in ``path``."""
    pkg = list(path.relative_to(ROOT).parts[:-1])  # the package a module (or an __init__) is in
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_nothing_imports_cli() -> None:
    """cli.py is the top layer (a module, outside the contract's packages).  A ``__main__.py``
    is a program of the same rank (``torchrun -m elastic_bench.train`` parses the options of
    ``elastic-bench train`` through cli's app), so that one may."""
    entry = ROOT / "elastic_bench" / "train" / "__main__.py"
    offenders = [str(p.relative_to(ROOT)) for p in modules() if p != entry for mod, _ in _imports(p) if mod == "cli" or mod.startswith("cli.")]
    assert not offenders


def _package(module: str) -> str:
    """The stage a module belongs to: elastic_bench.<pkg> (or the module itself at the top)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_private_names_across_packages() -> None:
    """Neither ``from a.b import _x`` nor ``import a.b as m; m._x`` across packages (cli.py included)."""
    offenders = []
    for p in modules() + [ROOT / "cli.py"]:
        here = _package(".".join(p.relative_to(ROOT).with_suffix("").parts))
        for mod, names in _imports(p):
            if not mod.startswith(PACKAGES) or _package(mod) == here:
                continue
            offenders += [f"{p.relative_to(ROOT)}: {mod}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
        tree = ast.parse(p.read_text())
        aliases = {}  # local name -> module, for names bound to modules of another package
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name.split(".")[0]): a.name for a in node.names if a.name.startswith(PACKAGES)})
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGES):
                aliases.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                mod = aliases[node.value.id]
                if node.attr.startswith("_") and not node.attr.startswith("__") and _package(mod) != here:
                    offenders.append(f"{p.relative_to(ROOT)}: {mod}.{node.attr}")
    assert not offenders, offenders


def test_every_top_level_module_has_a_layer() -> None:
    """A new module of elastic_bench must be placed in the contract (or its own imports go unchecked)."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in cfg if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    children = {f"elastic_bench.{p.stem if p.is_file() else p.name}" for p in (ROOT / "elastic_bench").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}  # fmt: skip
    assert children - named == set(), f"not in any layer of pyproject.toml: {sorted(children - named)}"
