"""A LaTeX (booktabs) table of the main results: one row per configuration, mean ± std over
seeds, the best value of each column in bold, the values not separable from it underlined.

"Better" follows :mod:`.significance` (the caption says so): a value is only beaten when the
gap exceeds the sum of the two seed standard deviations, with ≥ 2 seeds on both sides.

Example::

    >>> tex = results_table(load_results(["results/cpu-small/main.csv"]))
    >>> Path("reports/cpu-small/main-results.tex").write_text(tex)

Needs ``\\usepackage{booktabs}`` in the document.
"""

from __future__ import annotations

import math

import pandas as pd

from .paper_figures import joined
from .significance import RULE, Stat, better

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
DEFAULT_METRICS = ("hr@10", "ndcg@10", "mrr@10")


def escape(text: object) -> str:
    """``text`` with LaTeX's special characters escaped (names like ``elastic_causal``, ``90%``)."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def _fmt(mean: float, std: float | None, digits: int) -> str:
    if mean != mean:
        return "--"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} \\pm {std:.{digits}f}"


def _column_stats(j: pd.DataFrame, col: str) -> list[Stat]:
    if col == "latency_ms_p50":
        return [Stat(r["latency_ms_p50"], (r["latency_ms_p80"] - r["latency_ms_p20"]) / 2, int(r["n_samples"]) if r["n_samples"] == r["n_samples"] else 0)
                for _, r in j.iterrows()]  # fmt: skip
    return [Stat(r[f"{col}_mean"], r[f"{col}_std"], int(r["seeds"])) for _, r in j.iterrows()]


def marks(stats: list[Stat], higher_is_better: bool) -> list[str]:
    """Per value: ``"best"`` (bold), ``"tie"`` (not separable from the best: underlined) or ``""``."""
    finite = [i for i, s in enumerate(stats) if s.mean == s.mean and math.isfinite(s.mean)]
    if not finite:
        return [""] * len(stats)
    pick = max if higher_is_better else min
    best = pick(finite, key=lambda i: stats[i].mean)
    out = []
    for i, s in enumerate(stats):
        if i == best:
            out.append("best")
        elif i in finite and not better(stats[best], s, higher_is_better):
            out.append("tie")
        else:
            out.append("")
    return out


def results_table(
    df: pd.DataFrame,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    caption: str = "Main results",
    label: str = "tab:main-results",
    digits: int = 4,
) -> str:
    """The LaTeX source of the table (see the module docstring); ``df`` is a results DataFrame."""
    j = joined(df)
    if j.empty:
        raise ValueError("no accuracy rows with status ok: nothing to tabulate")
    metrics = tuple(m for m in metrics if f"{m}_mean" in j)
    j = j.sort_values(["label"]).reset_index(drop=True)
    has_lat = j["latency_ms_p50"].notna().any()
    has_mem = j["memory_params"].gt(0).any()
    cols: list[tuple[str, str, str | None]] = [("params", "Params (M)", None)]  # (key, header, direction)
    if has_mem:
        cols.append(("memory_params", "of which memory (M)", None))
    cols += [(m, escape(m.upper()), "max") for m in metrics]
    if has_lat:
        cols.append(("latency_ms_p50", "Latency (ms)", "min"))
    colmarks = {}
    for key, _, direction in cols:
        if direction:
            colmarks[key] = marks(_column_stats(j, key), direction == "max")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        "Model & " + " & ".join(h for _, h, _ in cols) + r" \\",
        r"\midrule",
    ]
    for i, r in j.iterrows():
        cells = [escape(r["label"])]
        for key, _, direction in cols:
            if key in ("params", "memory_params"):
                cells.append(f"{r[key] / 1e6:.3f}" if r[key] == r[key] else "--")
                continue
            if key == "latency_ms_p50":
                text = _fmt(r[key], None, 3)
            else:
                text = _fmt(r[f"{key}_mean"], r[f"{key}_std"], digits)
            m = colmarks[key][i]
            if text == "--":
                cells.append(text)
            elif m == "best":
                cells.append(f"$\\mathbf{{{text}}}$")
            elif m == "tie":
                cells.append(f"\\underline{{${text}$}}")
            else:
                cells.append(f"${text}$")
        lines.append(" & ".join(cells) + r" \\")
    seeds = sorted(set(int(s) for s in j["seeds"]))
    datasets = ", ".join(sorted(set(str(d) for d in j["dataset"])))
    lens = sorted(set(int(v) for v in j["eff_seq_len"].dropna()))
    cap = (
        f"{escape(caption)} on {escape(datasets)}: test metrics, mean $\\pm$ std over "
        f"{'/'.join(map(str, seeds))} seed(s) (full-catalogue ranking unless the dataset says otherwise). "
        f"Bold: best mean per column; underlined: not separable from the best, where {escape(RULE)}."
        + (f" Latency: inference p50 at N={escape(','.join(map(str, lens)))} (its p20--p80 half-range plays the std)." if has_lat else "")
    )
    lines += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{cap}}}", f"\\label{{{label}}}", r"\end{table}", ""]
    return "\n".join(lines)
