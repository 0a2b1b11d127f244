"""The README's "Verdict so far" is written by hand from the committed verdict rows: every
``mean ± std`` it quotes must be the mean and standard deviation across seeds of some model in
``results/verdict-cpu/accuracy.csv``, and every Welch p it quotes one of the claims table's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from elastic_bench.report.verdict import seed_stats
from elastic_bench.store import load_results

ROOT = Path(__file__).resolve().parents[1]
ACCURACY = ROOT / "results" / "verdict-cpu" / "accuracy.csv"
CLAIMS = ROOT / "reports" / "verdict-cpu" / "claims.csv"


def verdict_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Verdict so far")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.skipif(not ACCURACY.is_file(), reason="no committed verdict rows")
def test_every_mean_and_spread_the_readme_quotes_is_a_committed_seed_group():
    stats = seed_stats(load_results(ACCURACY)).dropna(subset=["std"])
    known = {(f"{m:.4f}", f"{s:.4f}") for m, s in zip(stats["mean"], stats["std"])}
    quoted = set(re.findall(r"(\d\.\d{4}) ± (\d\.\d{4})", verdict_section()))
    assert quoted, "the section quotes no mean ± std: has its format changed?"
    assert quoted <= known, f"quoted but not in accuracy.csv: {sorted(quoted - known)}"


@pytest.mark.skipif(not CLAIMS.is_file(), reason="no committed claims table")
def test_every_welch_p_the_readme_quotes_is_in_the_claims_table():
    table = CLAIMS.read_text()
    computed = {f"{float(p):.2f}" for p in re.findall(r"Welch p = (\d\.\d+)", table)}
    quoted = set(re.findall(r"(?:Welch )?p = (\d\.\d\d)\b", verdict_section()))
    assert quoted, "the section quotes no p value: has its format changed?"
    assert quoted <= computed, f"quoted but not in claims.csv: {sorted(quoted - computed)}"
