"""Datasets: named public datasets found through ``--data-dir`` / ``ELASTIC_BENCH_DATA``."""
