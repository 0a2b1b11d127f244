"""``reports/<preset>/``: the claims table (Markdown, LaTeX, CSV), ``verdict.md`` and the
figures, from a verdict preset's CSVs alone (``elastic-bench figures --preset verdict-cpu``).
The rules and claims are in ``verdict.py``, the figures in ``verdict_figures.py``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..store import COLUMNS as COLUMNS_OF_RESULTS
from ..store import load_results
from .convergence import convergence_note, convergence_table
from .training_budget import budget_text
from .verdict import DATASET_TITLES, RULES, _seed_table, claims_table, seed_stats, summary, to_latex, to_markdown
from .verdict_figures import learning_curves, long_history_table, plot_accuracy_families, plot_learning_curves, plot_long_histories, plot_memory_bank


def load(paths: Iterable[Path], strict: bool = True) -> pd.DataFrame:
    """The rows of ``paths`` (results CSVs); ``strict=False`` passes over files of another schema
    (a GPU session's kernel-check CSVs beside its sweep)."""
    frames = []
    for p in paths:
        if not Path(p).is_file():
            continue
        try:
            frames.append(load_results(p))
        except Exception:  # noqa: BLE001 - not a results CSV
            if strict:
                raise
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS_OF_RESULTS))


def write_verdict(results_dir: Path, out_dir: Path, pending: list[str], gpu_dir: Path = Path("results/gpu"), name: str = "verdict") -> list[Path]:
    """The claims table (Markdown, LaTeX, CSV), its figures and ``verdict.md`` from the CSVs of
    ``results_dir`` (``accuracy.csv``, ``throughput.csv``, ``serving.csv``, ``memory-bank*.csv``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    acc = load([results_dir / "accuracy.csv"])
    eff = load([results_dir / "throughput.csv", results_dir / "serving.csv"])
    bank = load(sorted(results_dir.glob("memory-bank*.csv")))
    gpu = load(sorted(gpu_dir.rglob("*.csv")), strict=False) if gpu_dir.is_dir() else None
    if gpu is not None and not gpu.empty and "device" in gpu:
        gpu = gpu[gpu["device"].astype(str).str.startswith("cuda") & gpu.get("task", pd.Series("efficiency", index=gpu.index)).eq("efficiency")]
    table = claims_table(eff, acc, bank, gpu)
    files = []
    table.to_csv(out_dir / "claims.csv", index=False)
    (out_dir / "claims.tex").write_text(to_latex(table, f"ELASTIC's claims tested ({name}); rules in claims.md", f"tab:{name}-claims"))
    curves = learning_curves(results_dir / "runs")
    long = long_history_table(acc, curves)
    stats = seed_stats(acc)
    md = [f"# The verdict ({name})", "", "Generated from the CSVs alone (`elastic-bench figures --preset " + name + " --from-csv`).", "",
          "## Summary", "", to_markdown(summary(table)),
          "Counts are rows of the claims table below. The memory and speed claims are tested in every regime measured "
          "(`infer`, `train_step`, `serve`, `serve_step`), against softmax and against the best exact backend, each a row of "
          "its own: the `train_step` rows test them beyond the paper's inference wording, so read the rows, not only the counts.",
          "", "## Rules", ""]  # fmt: skip
    md += [f"- **{k}**: {v}." for k, v in RULES.items()]
    md += ["", "## Protocol", "",
           "- Accuracy: ML-1M, the `sasrec-ml1m` protocol (full ranking with the input window removed, SASRec's block, d=50, 2 blocks, "
           "1 head, sampled softmax with 128 negatives, T=0.05, batch 128, lr 1e-3), one epoch budget and early stopping for every model; "
           "the validation item is held out of training in both families, and test is read at the best validation epoch.",
           "- Causal family: objective `all` (every position predicts its next item, per-position negatives). "
           "Last-position family: objective `last` (the last position of each prefix; per user and epoch, one random prefix and the whole "
           "history). There softmax keeps SASRec's causal mask and `elastic` is non-causal (its dispatcher pools the whole history): the "
           "scored last position reads the whole history in both, but earlier positions, which feed it in the second block, see "
           "only their past under softmax, so that comparison differs in causality as well as in mechanism; softmax (non-causal), "
           "trained without its mask (`train --non-causal`), is the like-for-like one.",
           *(["- A second dataset for the memory-bank ablation (where ML-1M cannot separate the bank sizes): "
              + ", ".join(sorted({DATASET_TITLES.get(str(d), str(d)) for d in acc["dataset"] if str(d) not in ("ml-1m", "nan")}))
              + ", the same protocol and budget in SASRec's shape for it (max length 50, dropout 0.5), objective `last`; its rows are a family of their own."]
             if not acc.empty and "dataset" in acc and (~acc["dataset"].astype(str).isin(["ml-1m", "nan"])).any() else []),
           "- Efficiency: the preset's sweeps on this machine (`results/<preset>/throughput.csv`, `serving.csv`, `memory-bank*.csv`), "
           "at the accuracy runs' shape.", "",
           "## Claims", "", to_markdown(table.drop(columns=["paper"])), "## Accuracy by seed (test NDCG@10)", "",
           "Mean and sample standard deviation (n - 1) across seeds; `rows` are the config hashes of the seeds' rows.", "",
           to_markdown(_seed_table(stats)), ]  # fmt: skip
    conv = convergence_table(curves)
    md += ["## Convergence (validation NDCG@10)", "", to_markdown(conv), convergence_note(conv), ""]
    md += ["## Long histories (objective all, seed 0)", "", to_markdown(long)]
    md += ["## Budget", "", budget_text(acc, curves, pending), ""]
    md += ["## Pending", ""] + ([f"- {p}" for p in pending] or ["- nothing: every planned cell has a row"]) + [""]
    (out_dir / "claims.md").write_text(to_markdown(table))
    (out_dir / "verdict.md").write_text("\n".join(md))
    files += [out_dir / "claims.csv", out_dir / "claims.tex", out_dir / "claims.md", out_dir / "verdict.md"]
    files += plot_accuracy_families(acc, out_dir)
    files += plot_memory_bank(acc, bank, out_dir)
    files += plot_learning_curves(curves, out_dir)
    files += plot_long_histories(long, out_dir)
    if not eff.empty:  # the sweeps' own figures: latency, speed-up and memory vs N, serving
        from .plots import plot_results

        files += plot_results(eff, baseline="softmax", out_dir=out_dir / "efficiency")
    return files
