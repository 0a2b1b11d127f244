"""The verdict's figures: accuracy by family, the memory-bank ablation (accuracy, parameters,
inference and training cost against bank size), learning curves and long histories.  Each is
drawn from the verdict's CSVs (``verdict.py`` decides the claims; ``verdict_report.py`` writes
them and calls these)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from ..optimizers import epochs_implementation
from .figure_kit import plt, save_figure
from .verdict import DATASET_TITLES, FLAT, _num, bank_latency, family_of, family_order, family_setting, model_label


def plot_accuracy_families(acc: pd.DataFrame, out_dir: Path) -> list[Path]:
    ok = acc[acc["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["family"] = ok.apply(family_of, axis=1)
    ok["label"] = ok.apply(model_label, axis=1)
    fams = sorted(ok["family"].unique(), key=family_order)
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        sub = ok[ok["family"] == fam]
        labels = sorted(sub["label"].unique(), key=lambda s: (s != "softmax", s))
        for i, lab in enumerate(labels):
            v = sub[sub["label"] == lab]["ndcg@10"].astype(float)
            ax.scatter([i] * len(v), v, color="C%d" % i, s=18, zorder=3)
            ax.hlines(v.mean(), i - 0.25, i + 0.25, color="C%d" % i, lw=2)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        _min_span(ax, float(sub["ndcg@10"].astype(float).mean()))
        ax.set_title(family_setting(fam), fontsize=9)
        ax.set_ylabel("test NDCG@10 (dots: seeds, bar: mean)")
        ax.grid(axis="y", alpha=0.3)
    note = "Equal epoch budget (verdict-cpu preset), early stopping on held-out validation; test at the best validation epoch; full ranking."
    return save_figure(fig, ok[["family", "label", "model", "options", "seed", "ndcg@10", "hr@10", "config_hash"]], out_dir, "accuracy-families", note)


def _min_span(ax: plt.Axes, centre: float, rel: float = 0.10) -> None:
    """Widen the y axis to at least ``rel`` of ``centre``, so that a 0.1 % gap between two runs
    does not fill the panel as if it were a large one."""
    lo, hi = ax.get_ylim()
    if centre > 0 and hi - lo < rel * centre:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - rel * centre / 2, mid + rel * centre / 2)


def bank_accuracy(ok: pd.DataFrame) -> pd.DataFrame:
    """``elastic`` accuracy rows with their bank size ``M``, family and, where the family has a
    bank-less run, its mean test NDCG@10 (``no_bank``) and each run's change against it in %."""
    ok = ok.copy()
    ok["M"] = ok["memory_size"].map(_num)
    ok["family"] = ok.apply(family_of, axis=1)
    ok["data"] = [f.split(", ")[2] if f.count(", ") == 2 else "ml-1m" for f in ok["family"]]
    ok["ndcg@10"] = ok["ndcg@10"].astype(float)
    ok["no_bank"] = ok["family"].map(ok[ok["M"] == 0].groupby("family")["ndcg@10"].mean())
    ok["vs_no_bank_pct"] = 100.0 * (ok["ndcg@10"] / ok["no_bank"] - 1.0)
    return ok


def bank_params(ok: pd.DataFrame, lat: pd.DataFrame) -> tuple[pd.Series, str]:
    """Parameters per bank size for the figure's second axis: the ML-1M accuracy model's (its
    bank-less count plus what each bank adds in the latency sweep: the sweep's model counts 60k
    more weights without a bank, but each bank adds the same to both), or the sweep model's own
    while no ML-1M bank-less run exists."""
    sweep = lat.dropna(subset=["params"]).sort_values("seq_len").drop_duplicates("memory_size").set_index("memory_size")["params"].astype(float)
    base = ok[(ok["M"] == 0) & (ok["family"] == "last, N=200")]["params"].map(_num).dropna() if not ok.empty and "params" in ok else pd.Series(dtype=float)
    if base.empty or 0 not in sweep.index:
        return sweep.sort_index(), "parameters (latency sweep's model)"
    return (sweep - sweep[0] + float(base.iloc[0])).sort_index(), "parameters (ML-1M accuracy model)"


def plot_memory_bank(acc: pd.DataFrame, bank: pd.DataFrame, out_dir: Path) -> list[Path]:
    ok = acc[(acc["status"] == "ok") & (acc["model"] == "elastic")].copy()
    lat = bank_latency(bank) if not bank.empty else pd.DataFrame()
    if ok.empty and lat.empty:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.9))
    x = lambda m: [max(float(v), 256.0) for v in m]  # noqa: E731 - M = 0 drawn at the left edge
    if not ok.empty:
        ok = bank_accuracy(ok)
        relative = ok["data"].nunique() > 1 and ok["vs_no_bank_pct"].notna().all()  # datasets of unlike scale: each against its own no-bank mean
        col = "vs_no_bank_pct" if relative else "ndcg@10"
        for i, (fam, g) in enumerate(sorted(ok.groupby("family"), key=lambda kv: family_order(kv[0]))):
            axes[0].scatter(x(g["M"]), g[col], s=18, color=f"C{i}", zorder=3)
            mean = g.groupby("M")[col].mean()
            label = f"{DATASET_TITLES.get(g['data'].iloc[0], g['data'].iloc[0])}, {fam.split(', ')[1]}"
            label += f" (no bank: {g['no_bank'].iloc[0]:.4f})" if relative else ""
            axes[0].plot(x(mean.index), mean.values, color=f"C{i}", label=label)
        if relative:
            axes[0].axhline(0.0, color="black", lw=0.8)
            _min_span(axes[0], 1.0, rel=10.0)  # at least 10 points of percentage
            axes[0].set_ylabel("test NDCG@10 vs no bank (%)")
        else:
            _min_span(axes[0], float(ok["ndcg@10"].mean()))
            axes[0].set_ylabel("test NDCG@10 (objective last)")
        if ok["family"].nunique() > 1:
            axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)  # below the axis: no point hides behind it
    else:
        relative = False
    axes[0].set(xscale="log", xlabel="memory slots M (0 drawn at 256)")
    if not lat.empty:
        for (pass_, n, sparse), g in lat.groupby(["pass", "seq_len", "sparse_grad"]):
            ax = axes[1] if pass_ == "infer" else axes[2]
            label = f"{pass_} N={n}" + ((" sparse grad" if sparse else " dense grad") if pass_ == "train_step" else "")
            ax.errorbar(x(g["memory_size"]), g["vs_no_bank"], yerr=[(g["vs_no_bank"] - g["vs_no_bank_ci_lo"]).clip(lower=0).fillna(0),
                        (g["vs_no_bank_ci_hi"] - g["vs_no_bank"]).clip(lower=0).fillna(0)], marker="o", ms=3, capsize=2, label=label)  # fmt: skip
        params, params_label = bank_params(ok, lat)
        xs = x(lat["memory_size"]) + (x(ok["M"]) if not ok.empty else [])
        axes[0].set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # every bank size swept, trained or not yet
        if not params.empty:
            top = axes[0].twiny()  # parameters as a second x scale: the same slots, counted in weights
            top.set(xscale="log", xlim=axes[0].get_xlim())
            top.set_xticks(x(params.index), [f"{v / 1e6:.2f}M" for v in params], fontsize=7)
            top.minorticks_off()
            top.set_xlabel(params_label, fontsize=8)
    for ax, title in ((axes[1], "inference latency / no bank"), (axes[2], "train step latency / no bank")):
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(FLAT, color="0.5", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="memory slots M (0 drawn at 256)", ylabel=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    paired = "paired" in lat and bool(lat["paired"].any())
    how = " (paired: each sweep timed its bank sizes' calls interleaved)" if paired and bool(lat["paired"].all()) else " (paired where the calls were interleaved)" if paired else ""
    note = f"Dotted: {FLAT:.2f}x (the 'flat' rule). Error bars: 95 % bootstrap CI of the latency ratio{how}. Accuracy runs use dense bank gradients."
    if not ok.empty:
        note = "Accuracy: dots are seeds, the line their mean" + (", each dataset against its own no-bank mean. " if relative else ". ") + note
    keep = ["family", "M", "seed", "ndcg@10", "no_bank", "vs_no_bank_pct", "config_hash"]
    data = pd.concat([lat.assign(kind="latency"), ok[keep].rename(columns={"M": "memory_size"}).assign(kind="accuracy") if not ok.empty else None])
    for c in ("seq_len", "memory_size", "params", "seed"):  # whole numbers stay whole beside the other kind's blanks
        if c in data:
            data[c] = pd.to_numeric(data[c], errors="coerce").round().astype("Int64")
    data = data[["kind", *(c for c in data.columns if c != "kind")]]
    return save_figure(fig, data, out_dir, "memory-bank", note)


def learning_curves(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for p in sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []:
        d = json.loads(p.read_text())
        cfg = d.get("config", {})
        if cfg.get("max_len") is None or d.get("objective") is None:
            continue  # a history without its length or objective belongs to no family of the verdict
        opts = "causal=False" if cfg.get("causal") is False else ""
        label = model_label(pd.Series({"model": d.get("model"), "memory_size": (cfg.get("options") or {}).get("memory_size"), "options": opts}))
        family = family_of(pd.Series({"objective": d.get("objective"), "seq_len": cfg.get("max_len"), "dataset": cfg.get("data")}))
        for h in d.get("history", []):
            rows.append({"run": p.stem, "label": label, "family": family, "objective": d.get("objective"), "max_len": cfg.get("max_len"), "seed": cfg.get("seed"),
                         "dataset": cfg.get("data"), "epoch": h.get("epoch"), "epoch_s": h.get("epoch_s"), "loss": h.get("loss"),
                         "valid_ndcg@10": h.get("valid_ndcg@10"), "optimizer": h.get("optimizer") or "",
                         "stopped": d.get("stopped", "")})  # fmt: skip
    return pd.DataFrame(rows)


def plot_learning_curves(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    if curves.empty:
        return []
    groups = sorted(curves["family"].unique(), key=family_order)  # the accuracy figure's order
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], groups):
        sub = curves[curves["family"] == fam]
        for (label, seed), g in sub.groupby(["label", "seed"]):
            ax.plot(g["epoch"], g["valid_ndcg@10"], lw=1, label=f"{label} s{seed}")
        ax.set_title(family_setting(fam), fontsize=9)
        ax.set(xlabel="epoch", ylabel="validation NDCG@10")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return save_figure(fig, curves, out_dir, "learning-curves", "Validation NDCG@10 per epoch of every finished run (results/<preset>/runs/*.json).")


def _reason_field(reason: object, key: str) -> str:
    """``key``'s value in an accuracy row's ``reason`` (``eval=full; ...; stopped=epochs; optimizer=...``)."""
    m = re.search(rf"(?:^|; ){re.escape(key)}=([^;]*)", str(reason) if isinstance(reason, str) else "")
    return m.group(1).strip() if m else ""


def long_history_table(acc: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    ok = acc[(acc["status"] == "ok") & (acc["objective"] == "all") & acc["model"].isin(["softmax", "elastic-causal"]) & (acc["seed"].astype(int) == 0)]
    out = []
    for _, r in ok.sort_values(["seq_len", "model"]).iterrows():
        c = curves[(curves["run"] == f"{r['model']}-{r['config_hash']}")] if not curves.empty else curves
        epoch_s = float(c["epoch_s"].median()) if not c.empty else math.nan
        out.append({"model": r["model"], "max_len": int(_num(r["seq_len"])), "test NDCG@10": round(_num(r["ndcg@10"]), 4),
                    "median epoch s": round(epoch_s, 1), "peak memory MB": _num(r["peak_mem_mb"]), "cpu threads": r.get("cpu_threads"),
                    "stopped": _reason_field(r.get("reason"), "stopped"),
                    "optimizer": epochs_implementation(c.to_dict("records")) if not c.empty else _reason_field(r.get("reason"), "optimizer") or "not recorded",
                    "row": r["config_hash"]})  # fmt: skip
    return pd.DataFrame(out)


def plot_long_histories(long: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Test NDCG@10, median epoch time and peak memory at each max length, per model (seed 0)."""
    if long.empty:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    models = sorted(long["model"].unique())
    lens = sorted(long["max_len"].unique())
    width = 0.8 / max(len(models), 1)
    for ax, col in zip(axes, ("test NDCG@10", "median epoch s", "peak memory MB")):
        for i, m in enumerate(models):
            sub = long[long["model"] == m].set_index("max_len").reindex(lens)
            bars = ax.bar([j + i * width for j in range(len(lens))], sub[col].astype(float), width, label=m, color=f"C{i}")
            ax.bar_label(bars, fmt="%.4f" if col == "test NDCG@10" else "%.0f", fontsize=7, padding=1)
        ax.margins(y=0.12)  # room for the value labels
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(lens))], [f"max len {n}" for n in lens])
        ax.set_ylabel(col)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(models), fontsize=8, frameon=False)  # above the bars, not on one
    note = "ML-1M, objective all, seed 0, one thread; epoch time: the training loop of one epoch (evaluation excluded); peak memory: the training process's own."
    return save_figure(fig, long, out_dir, "long-histories", note)
