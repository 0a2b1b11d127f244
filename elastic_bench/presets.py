"""Named presets (model / training / sweep settings).  Later issues add training presets."""

from __future__ import annotations

PRESETS: dict[str, str] = {}


def describe() -> dict[str, str]:
    """name -> one-line description of every preset known to this version."""
    return dict(PRESETS) or {"(none yet)": "training presets arrive with `elastic-bench train`"}
