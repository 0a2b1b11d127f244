"""Baseline attention mechanisms, one file each.

Each module defines a :class:`elastic_bench.attention.Backend` subclass and is declared in
``pyproject.toml`` under the ``elastic_bench.backends`` entry-point group, exactly as a
third-party package would declare its own backend.  Importing this package imports no
optional dependency (flash-attn, xformers): those are imported only when a module is
built.
"""
