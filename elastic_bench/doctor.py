"""`elastic-bench doctor` and `elastic-bench list`: what is installed, usable, and why not."""

from __future__ import annotations

import platform

import torch
from rich.console import Console
from rich.table import Table

from . import registry
from .attention import dtype_name
from .data import named
from .environment import OPTIONAL_PACKAGES, package_version


def backend_rows(device: str, dtype: torch.dtype, head_dim: int = 32) -> list[dict[str, str]]:
    """One row per registered (or broken) backend: usable here with ``dtype``, or why not."""
    rows = []
    for name in registry.names():
        cls = registry.get(name)
        cap = cls.capabilities
        modes = [m for m, ok in (("causal", cap.causal), ("non-causal", cap.non_causal)) if ok]
        reasons = {mode: cls.unavailable_reason(device, dtype, causal=(mode == "causal"), head_dim=head_dim) for mode in modes}
        reason = next((r for r in reasons.values() if r), None) if all(reasons.values()) else None
        rows.append(
            {
                "backend": name,
                "modes": ", ".join(modes),
                "usable": "yes" if reason is None else "no",
                "why": reason or "",
                "options": ", ".join(f"{k}={v}" for k, v in cap.options.items()),
                "summary": cls.summary,
            }
        )
    for name, err in sorted(registry.load_errors().items()):
        rows.append({"backend": name, "modes": "", "usable": "no", "why": err, "options": "", "summary": ""})
    return rows


def doctor_report(console: Console) -> None:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    env = Table(title="environment", show_header=False)
    env.add_row("python", platform.python_version())
    env.add_row("torch", torch.__version__)
    env.add_row("device", torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)")
    env.add_row("CUDA", torch.version.cuda or "not in this torch build")
    for pkg in OPTIONAL_PACKAGES:
        env.add_row(pkg, package_version(pkg) or "not installed")
    ray = package_version("ray")
    env.add_row("launchers", "local, ray " + ray if ray else "local (ray: not installed; pip install 'elastic-bench[distributed]')")
    env.add_row(named.ENV_VAR, str(named.data_dir() or "unset"))
    console.print(env)
    for dtype in ([torch.float32, torch.bfloat16] if cuda else [torch.float32]):
        table = Table(title=f"backends on {device}, {dtype_name(dtype)}, head dim 32")
        for col in ("backend", "modes", "usable", "why not"):
            table.add_column(col, overflow="fold")
        for row in backend_rows(device, dtype):
            style = "green" if row["usable"] == "yes" else "red"
            table.add_row(row["backend"], row["modes"], f"[{style}]{row['usable']}[/]", row["why"])
        console.print(table)


def list_report(console: Console, what: str = "all") -> None:
    if what in ("all", "models"):
        table = Table(title="models (attention backends)")
        table.add_column("name")
        table.add_column("what it is", overflow="fold")
        table.add_column("options (defaults)", overflow="fold")
        for name in registry.names():
            cls = registry.get(name)
            table.add_row(name, cls.summary, ", ".join(f"{k}={v}" for k, v in cls.capabilities.options.items()))
        console.print(table)
    if what in ("all", "presets"):
        from . import presets

        table = Table(title="presets")
        table.add_column("name")
        table.add_column("what it is", overflow="fold")
        for name, desc in presets.describe().items():
            table.add_row(name, desc)
        console.print(table)
    if what in ("all", "datasets"):
        root = named.data_dir()
        table = Table(title=f"named datasets (data dir: {root or 'unset: --data-dir or ' + named.ENV_VAR})")
        for col in ("name", "file", "found", "description"):
            table.add_column(col, overflow="fold")
        for ds in named.NAMED.values():
            found = "yes" if root is not None and (root / ds.relpath).is_file() else "no"
            table.add_row(ds.name, ds.relpath, found, ds.description)
        console.print(table)
