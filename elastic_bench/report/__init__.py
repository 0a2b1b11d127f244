"""Rows into figures and tables: everything here reads results CSVs
(:mod:`elastic_bench.store`) and imports no model and no measuring code but the statistics.

- :mod:`.figure_kit`      what every figure shares: headless matplotlib, footnotes, the log2 axis, saving PNG + PDF + CSV
- :mod:`.verdict`         the claims table of a verdict preset (rules, verdicts, figures)
- :mod:`.compare`         pairing rows like for like; speed-ups and memory ratios vs a baseline
- :mod:`.accounting`      FLOP labels and per-token accounting columns
- :mod:`.significance`    the "better" rule for accuracy (Welch) and latency (ratio CI)
- :mod:`.plots`           the efficiency figures of a sweep
- :mod:`.serving_plots`   the serving figures (``serve``, ``serve_step``, state bytes)
- :mod:`.accuracy_plots`  accuracy figures of training rows
- :mod:`.paper_figures`   Pareto fronts, the claim check, ablation figures
- :mod:`.ablation_axes`   what each ablation axis varies and how its values are labelled
- :mod:`.latex`           booktabs tables, mean ± std over seeds, best in bold
- :mod:`.markdown`        the Markdown report of a sweep
"""
