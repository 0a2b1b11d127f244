"""Find attention backends through the ``elastic_bench.backends`` entry-point group.

Every backend, the built-in ones included, is declared in some package's metadata::

    [project.entry-points."elastic_bench.backends"]
    my-attention = "my_package.module:MyBackend"

and loaded lazily here.  A backend whose import fails is not fatal: it is listed by
:func:`load_errors` and by ``elastic-bench doctor`` with the error as its reason.
Backends can also be registered at run time with :func:`register` (tests do this).
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points

from .attention import Backend

GROUP = "elastic_bench.backends"

_backends: dict[str, type[Backend]] = {}
_errors: dict[str, str] = {}
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in entry_points(group=GROUP):
        if ep.name in _backends:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the tool
            _errors[ep.name] = f"import failed: {type(exc).__name__}: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            _errors[ep.name] = f"entry point {ep.value} is not an elastic_bench Backend subclass"
            continue
        _backends[ep.name] = cls


def register(cls: type[Backend], name: str | None = None, replace: bool = False) -> type[Backend]:
    """Register a backend class at run time (usable as a decorator)."""
    name = name or cls.name
    if not name:
        raise ValueError("a backend needs a name")
    _discover()
    if name in _backends and not replace and _backends[name] is not cls:
        raise ValueError(f"backend {name!r} is already registered")
    _backends[name] = cls
    _errors.pop(name, None)
    return cls


def unregister(name: str) -> None:
    _backends.pop(name, None)


def names() -> list[str]:
    """Registered backend names, ELASTIC first, then alphabetical."""
    _discover()
    return sorted(_backends, key=lambda n: (not n.startswith("elastic"), n))


def get(name: str) -> type[Backend]:
    """The backend class called ``name``; a ``KeyError`` whose message suggests a fix."""
    _discover()
    if name in _backends:
        return _backends[name]
    if name in _errors:
        raise KeyError(f"backend {name!r} could not be loaded: {_errors[name]}")
    close = difflib.get_close_matches(name, list(_backends), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KeyError(f"unknown backend {name!r}{hint}; known: {', '.join(names())}")


def load_errors() -> dict[str, str]:
    _discover()
    return dict(_errors)


def build(name: str, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False, **options):
    """Build the attention module of backend ``name``."""
    return get(name).build(d_model, heads, dropout=dropout, causal=causal, **options)
