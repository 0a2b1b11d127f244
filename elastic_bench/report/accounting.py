"""Parameter and FLOP accounting of ELASTIC rows: how much of the model is memory bank, and
what a forward pass costs analytically (METHODOLOGY.md "FLOPs", ELASTIC_SPEC.md §1–2).

The results schema is fixed (``tests/test_store.py``), so nothing here is a CSV column: the
derived columns are added at plot/table time from the columns every row already has
(``model``, ``memory_size``, ``experts``, ``d_model``, ``heads``, ``layers``, ``batch``,
``seq_len``, ``params``), by :func:`with_accounting`:

- ``memory_params``   parameters of the interest memory bank: the value table M×d plus the
                      two sub-key tables 2·n·(d_q/2) = n·d_q, with n = √M and d_q = d
                      (our key width); 0 when IMR is off (``memory_size = 0``, every
                      ``elastic-causal``, every non-ELASTIC model).  The IMR query projection
                      and LayerNorm are per-user compute, not bank, and are not counted.
- ``compute_params``  ``params - memory_params``.
- ``flops_analytic``  forward FLOPs of the whole non-causal ELASTIC recommender for the row's
                      batch and length (:func:`elastic_forward_flops`), on model-level
                      ``infer``/``fwd`` efficiency rows; empty for other rows and models.

How a row's ``flops`` was obtained is its ``flops_method`` (:mod:`elastic_bench.measure.flops`); every figure or table
that shows FLOPs or TFLOP/s names it with :func:`flops_label` / :func:`format_flops`, and a
``partial`` count (a lower bound: the counter was blind to some kernel) is never shown as
complete: it is written ``≥ value (partial)``.

Example::

    >>> flops_label("partial")
    'partial count (lower bound)'
    >>> format_flops(1.25, "counter+analytic", "{:.2f}")
    '1.25 (counter+analytic)'
    >>> memory_bank_params("elastic", 65536, 64)     # 64k slots, d = 64
    4210688
    >>> elastic_forward_flops(batch=2, seq_len=32, d_model=16, layers=2, experts=4, memory_size=16)
    951552
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FFN_MULT = 4  # the recommender's default (ModelConfig.ffn_mult) — the efficiency sweep's model


COMPLETE_FLOPS_METHODS = {
    "counter": "counted (every op visible to the counter)",
    "counter+analytic": "counted + analytic for the paths the counter cannot see",
    "analytic": "analytic formula",
}


def flops_is_partial(method: object) -> bool:
    """The count is not known to be complete: ``partial``, a failed count or no method recorded."""
    m = str(method or "").strip().lower()
    return m not in COMPLETE_FLOPS_METHODS or m in ("", "nan")


def flops_label(method: object) -> str:
    """Human label of a ``flops_method`` (for legends and footnotes)."""
    m = str(method or "").strip()
    if m.lower() in ("", "nan"):
        return "method not recorded (completeness unknown)"
    if m.lower().startswith("failed"):
        return f"not counted ({m})"
    if "partial" in m.lower():
        return "partial count (lower bound)"
    return COMPLETE_FLOPS_METHODS.get(m.lower(), m)


def format_flops(value: object, method: object, fmt: str = "{:.3g}") -> str:
    """``value (method)``; a partial or unlabelled count is prefixed ``≥``: never shown as complete."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    m = str(method or "").strip() or "method not recorded"
    text = fmt.format(v)
    return f"≥{text} ({m})" if flops_is_partial(method) else f"{text} ({m})"


def has_memory_bank(model: str, memory_size: float | int | None) -> bool:
    """IMR is on: the non-causal ``elastic`` backend with ``memory_size > 0``."""
    m = _num(memory_size)
    return str(model) == "elastic" and m > 0


def memory_bank_params(model: str, memory_size: float | int | None, d_model: float | int, key_dim: int | None = None) -> int:
    """Parameters of the memory bank (see the module docstring): ``M·d + √M·d_q``."""
    if not has_memory_bank(model, memory_size):
        return 0
    m, d = int(_num(memory_size)), int(_num(d_model))
    n = math.isqrt(m)
    return m * d + n * (key_dim or d)


def elastic_forward_flops(
    batch: int,
    seq_len: int,
    d_model: int,
    layers: int,
    experts: int,
    memory_size: int = 0,
    ffn_mult: int = FFN_MULT,
    key_dim: int | None = None,
) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward of the non-causal ELASTIC recommender
    (embeddings excluded: they are lookups), as ``torch.utils.flop_counter`` counts them.

    Per layer (B batch, N length, k experts, d width; heads do not change the count)::

        pack     q1 on P: 2·Bp·k·d²   k1, v1 on X: 4·B·N·d²   P Xᵀ and A V: 4·B·k·N·d   o1: 2·B·k·d²
        P FFN    4·m·B·k·d²
        unpack   q2, o2 on X: 4·B·N·d²   k2, v2 on P: 4·B·k·d²   X Pᵀ and A V: 4·B·N·k·d
        X FFN    4·m·B·N·d²

    (Bp = 1 for the first layer's static dispatchers, B otherwise.)  IMR, once per user:
    query 2·B·d·d_q and sub-key scores 2·B·n·d_q — the only term that depends on M, through
    n = √M: capacity grows as M·d while compute grows as √M·d_q.
    """
    b, n_, d, k, m = batch, seq_len, d_model, experts, ffn_mult
    dq = key_dim or d
    total = 0
    pb = 1
    if memory_size > 0:
        total += 2 * b * d * dq + 2 * b * math.isqrt(memory_size) * dq
        pb = b
    for _ in range(layers):
        total += 2 * pb * k * d * d + 4 * b * n_ * d * d + 4 * b * k * n_ * d + 2 * b * k * d * d
        total += 4 * m * b * k * d * d
        total += 4 * b * n_ * d * d + 4 * b * k * d * d + 4 * b * n_ * k * d
        total += 4 * m * b * n_ * d * d
        pb = b
    return total


def _num(v: object) -> float:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if x != x else x


def with_accounting(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus ``memory_params``, ``compute_params`` and ``flops_analytic`` (module docstring)."""
    out = df.copy()
    if out.empty:
        for c in ("memory_params", "compute_params", "flops_analytic"):
            out[c] = pd.Series(dtype=float)
        return out
    out["memory_params"] = [memory_bank_params(m, s, d) for m, s, d in zip(out["model"], out["memory_size"], out["d_model"])]
    out["compute_params"] = out["params"] - out["memory_params"]
    flops = []
    for _, r in out.iterrows():
        ok = str(r["model"]) == "elastic" and all(_num(r.get(c)) > 0 for c in ("batch", "seq_len", "d_model", "layers", "experts"))
        forward_only = str(r.get("pass")) in ("infer", "fwd")
        if ok and forward_only and str(r.get("task")) == "efficiency" and str(r.get("level", "model")) == "model":
            flops.append(
                elastic_forward_flops(
                    int(r["batch"]), int(r["seq_len"]), int(r["d_model"]), int(r["layers"]), int(r["experts"]), int(_num(r["memory_size"]))
                )
            )
        else:
            flops.append(np.nan)
    out["flops_analytic"] = flops
    return out
