"""A LaTeX (booktabs) table of the main results: one row per configuration, mean ± std over
seeds, the best value of each column in bold, the values not separable from it underlined.

"Better" follows :mod:`.significance`, and the caption states both tests: accuracy metrics
(mean ± std over seeds) by Welch's two-sided t-test at α = 0.05 (seed variance); latency (the
median of one seed's timing samples) by the 95 % bootstrap CI of the ratio of medians
(timing jitter), and not tested at all where the CSV has no raw samples.  Row labels name
each configuration's causality; the caption names batch, padding, threads and n.

Example::

    >>> tex = results_table(load_results(["results/cpu-small/main.csv"]))
    >>> Path("reports/cpu-small/main-results.tex").write_text(tex)

Needs ``\\usepackage{booktabs}`` in the document.
"""

from __future__ import annotations

import math

import pandas as pd

from .paper_figures import joined
from .significance import LATENCY_RULE, RULE, Stat, better, latency_differs

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
    """Seed statistics of an accuracy column (the latency column is tested by :func:`latency_marks`)."""
    return [Stat(r[f"{col}_mean"], r[f"{col}_std"], int(r["seeds"])) for _, r in j.iterrows()]


def latency_marks(j: pd.DataFrame) -> list[str]:
    """Per row: ``"best"`` (lowest median), ``"tie"`` (its latency does not differ from the best's under
    :data:`.significance.LATENCY_RULE`) or ``""`` (it differs, or it is untested: no raw samples)."""
    lat = j["latency_ms_p50"]
    finite = [i for i in range(len(j)) if lat.iloc[i] == lat.iloc[i] and math.isfinite(lat.iloc[i])]
    if not finite:
        return [""] * len(j)
    best = min(finite, key=lambda i: lat.iloc[i])
    samples = j["latency_samples_ms"] if "latency_samples_ms" in j else pd.Series("", index=j.index)
    out = []
    for i in range(len(j)):
        if i == best:
            out.append("best")
        elif i in finite and latency_differs(samples.iloc[best], samples.iloc[i]) is False:
            out.append("tie")
        else:
            out.append("")
    return out


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


def _span(values: pd.Series) -> str:
    v = sorted({int(x) for x in pd.to_numeric(values, errors="coerce").dropna()})
    return "--" if not v else (str(v[0]) if len(v) == 1 else f"{v[0]}--{v[-1]}")


def latency_caption(j: pd.DataFrame) -> str:
    """What the latency column is, how it was measured and tested (batch, padding, threads, n)."""
    lat = j[j["latency_ms_p50"].notna()]
    tested = lat["latency_samples_ms"].map(lambda v: isinstance(v, str) and bool(v.strip())) if "latency_samples_ms" in lat else pd.Series(False, index=lat.index)
    padding = ", ".join(sorted({str(v) for v in lat["eff_padding"] if str(v) not in ("", "nan")})) or "not recorded"
    threads = _span(lat["eff_threads"]) if "eff_threads" in lat else "--"
    text = (
        f"Latency: inference p50 in ms at N={_span(lat['eff_seq_len'])}, batch {_span(lat['eff_batch'])}, padding {padding}, "
        f"CPU threads {threads}, n = {_span(lat['n_samples'])} timing samples in "
        f"{_span(lat['n_repeats']) if lat['n_repeats'].notna().any() else '1'} repeat process(es) of one seed's model, in the causality each model was trained in (row label). "
    )
    if tested.all():
        return escape(text) + f"Latency: {escape(LATENCY_RULE)}."
    if not tested.any():
        return escape(text) + "Latency differences are not tested: the CSV has no raw timing samples, so no confidence interval is available (bold = lowest median only)."
    return escape(text) + f"Latency: {escape(LATENCY_RULE)} ({int(tested.sum())} of {len(lat)} rows have samples)."


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
        if key == "latency_ms_p50":
            colmarks[key] = latency_marks(j)
        elif direction:
            colmarks[key] = marks(_column_stats(j, key), direction == "max")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{ll" + "r" * len(cols) + "}",
        r"\toprule",
        "Model & Causality & " + " & ".join(h for _, h, _ in cols) + r" \\",
        r"\midrule",
    ]
    for i, r in j.iterrows():
        cells = [escape(r["label"]), escape(r["causality"])]
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
    cap = (
        f"{escape(caption)} on {escape(datasets)}: test metrics, mean $\\pm$ std over "
        f"{'/'.join(map(str, seeds))} seed(s) (full-catalogue ranking unless the dataset says otherwise). "
        f"Bold: best per column; underlined: not separable from the best. Metrics: {escape(RULE)}."
        + (" " + latency_caption(j) if has_lat else "")
    )
    lines += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{cap}}}", f"\\label{{{label}}}", r"\end{table}", ""]
    return "\n".join(lines)
