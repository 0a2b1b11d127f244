"""One entry point from a ``--data`` argument to a :class:`SequenceDataset`.

``--data`` is a named dataset (``ml-1m``, ``beauty``, ``sports``: found under
``--data-dir`` / ``$ELASTIC_BENCH_DATA``), a file path (any supported format), or
``synthetic[:key=value,...]`` with the keys of :func:`elastic_bench.data.synthetic.synthetic`
(``synthetic:n_users=2000,n_items=500,lengths=lognormal:50,seed=1``).
"""

from __future__ import annotations

from pathlib import Path

from . import named
from .formats import LoadOptions, SequenceDataset, load
from .synthetic import synthetic

_SYNTH_TYPES = {"n_users": int, "n_items": int, "lengths": str, "max_len": int, "skew": float, "follow": float, "branch": int, "seed": int}


def parse_synthetic(spec: str) -> dict:
    _, _, rest = spec.partition(":")
    kw: dict = {}
    # values may contain ':' (lengths=lognormal:50), so split on ',' then the first '='
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in _SYNTH_TYPES:
            raise ValueError(f"--data {spec}: bad synthetic option {part!r}; keys: {', '.join(_SYNTH_TYPES)}")
        try:
            kw[key] = _SYNTH_TYPES[key](value)
        except ValueError:
            raise ValueError(f"--data {spec}: {key}={value!r} is not a {_SYNTH_TYPES[key].__name__}") from None
    return kw


def load_dataset(spec: str, data_dir: str | None = None, options: LoadOptions = LoadOptions(), cache_dir: str | Path | None = None) -> SequenceDataset:
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return synthetic(**parse_synthetic(spec))
    if spec in named.NAMED:
        path = named.resolve(spec, data_dir)
        return load(path, options, cache_dir, name=spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"--data {spec}: not a named dataset ({', '.join(named.NAMED)}), not synthetic[:...], and no such file")
    return load(path, options, cache_dir)
