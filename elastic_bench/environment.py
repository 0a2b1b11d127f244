"""Facts about the machine and the software, for `doctor` and for every CSV row."""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import torch

OPTIONAL_PACKAGES = ("triton", "xformers", "flash-attn", "flash-linear-attention")


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def git_sha() -> str:
    """The commit of the source tree elastic-bench runs from ('' outside a git checkout), with
    ``-dirty`` when tracked source files (not ``results/`` or ``reports/``) have uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        if sha:
            from .provenance import uncommitted_source

            # results/ and reports/ are outputs: a sweep appending to a committed CSV does not
            # make the code that measures it dirty
            return sha + ("-dirty" if uncommitted_source(root) else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return ""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: accepted forms are auto, cpu, cuda, cuda:N")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model() or platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo); '' where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=None)
def environment(device_type: str = "cpu") -> dict[str, str]:
    """Environment metadata written to every result row."""
    dev = torch.device(device_type)
    versions = {name: package_version(name) for name in OPTIONAL_PACKAGES}
    return {
        "git_sha": git_sha(),
        "host": socket.gethostname(),
        "device": dev.type,
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "triton": versions["triton"] or "",
        "backend_versions": ";".join(f"{k}={v}" for k, v in versions.items() if v),
    }


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
