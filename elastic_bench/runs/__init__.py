"""Which cells run, where, and how they resume: the sweeps, the accuracy and ablation grids,
the figure presets, and the launchers that run cells elsewhere.

- :mod:`.spec`           the frozen sweep configuration (CLI + YAML + device defaults)
- :mod:`.grid`           the grid: one cell per measurement, crossed with each backend's option axes
- :mod:`.sweep`          the efficiency sweep: plan, resume, measure each cell, append its row
- :mod:`.repeats`        headline cells again in fresh worker processes, interleaved
- :mod:`.tasks`          the functions a launcher's workers run (one cell in, one row out)
- :mod:`.accuracy`       accuracy sweeps: train and evaluate every cell
- :mod:`.accuracy_spec`  ``sweep --task accuracy`` options into an accuracy spec
- :mod:`.train_cell`     one training cell: trained, checkpointed, turned into its row
- :mod:`.ablation`       ``elastic-bench ablate``: accuracy and efficiency along one axis
- :mod:`.figures`        ``elastic-bench figures --preset``: run a preset's cells, build its figures
- :mod:`.launch`         where cells run: this process, or Ray tasks
"""
