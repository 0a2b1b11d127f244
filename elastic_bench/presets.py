"""Named training presets: a :class:`TrainConfig` each, overridable from the command line.

- ``sasrec-ml1m``: the published SASRec setting on ML-1M of the generative-recommenders
  README (ELASTIC_SPEC.md §4): 2 SASRec blocks (layers.Block style "sasrec"), 1 head, d = 50, FFN hidden 50 with ReLU, dropout
  0.2, max length 200, sampled softmax with 128 negatives drawn per position, temperature 0.05,
  L2-normalised embeddings, batch 128, lr 1e-3 (AdamW, β₂ = 0.98), no weight decay, no
  warm-up, 101 epochs, objective ``all``; and its evaluation protocol: the items of the
  input window are removed from the ranking, training uses s[:-1] (the validation item
  too) and the test metrics are those of the last epoch.  Its reference numbers (full ranking): HR@10 0.2853, NDCG@10 0.1603,
  HR@50 0.5474, NDCG@50 0.2185.
- ``quick``: a CPU demo that trains something meaningful in a few minutes on a
  synthetic dataset with learnable structure.
"""

from __future__ import annotations

from dataclasses import replace

from .train.config import TrainConfig

SASREC_ML1M_REFERENCE = {"hr@10": 0.2853, "ndcg@10": 0.1603, "hr@50": 0.5474, "ndcg@50": 0.2185}

TRAIN_PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "sasrec-ml1m": (
        "SASRec on ML-1M as published (generative-recommenders): d=50, 2 blocks, 1 head, sampled softmax n=128, T=0.05",
        TrainConfig(
            model="softmax",
            data="ml-1m",
            max_len=200,
            d_model=50,
            heads=1,
            layers=2,
            dropout=0.2,
            ffn_mult=1,
            ffn_act="relu",
            block="sasrec",  # the reference's block (queries-only LayerNorm, no final LayerNorm, xavier init)
            l2_norm=True,
            objective="auto",  # all for causal models (softmax: as published), last otherwise
            loss="sampled",
            negatives=128,
            negatives_per="position",  # the reference's local sampler: 128 negatives for every position
            temperature=0.05,
            batch_size=128,
            lr=1e-3,
            weight_decay=0.0,
            adam_beta2=0.98,
            warmup_steps=0,
            clip=0.0,
            epochs=101,
            patience=0,
            # the reference's protocol: the input window is removed from the ranking, the
            # validation item is trained on, and test is read at the last epoch
            exclude_history="input",
            train_on_valid=True,
            amp=False,
        ),
    ),
    "quick": (
        "CPU demo: synthetic 2,000 users x 1,000 items, d=32, 10 epochs (a few minutes on a laptop CPU)",
        TrainConfig(
            data="synthetic:n_users=2000,n_items=1000,lengths=lognormal:60,seed=0",
            max_len=100,
            d_model=32,
            heads=2,
            layers=2,
            dropout=0.1,
            loss="full",
            batch_size=64,
            lr=3e-3,
            epochs=10,
            patience=3,
        ),
    ),
}

PRESETS: dict[str, str] = {name: desc for name, (desc, _) in TRAIN_PRESETS.items()}


# what a run must share with the published setting for its figures to sit beside the reference
# (the stopping rules, seed, device and evaluation batch may differ)
PUBLISHED_PROTOCOL_FIELDS = ("model", "data", "max_len", "d_model", "heads", "layers", "dropout", "ffn_mult", "ffn_act", "block", "l2_norm",
                             "options", "objective", "loss", "negatives", "negatives_per", "temperature", "batch_size", "lr", "weight_decay",
                             "adam_beta2", "warmup_steps", "clip", "eval", "exclude_history", "train_on_valid")  # fmt: skip


def published_reference(cfg: TrainConfig) -> dict[str, float] | None:
    """The published figures a run of ``cfg`` reproduces, or None when its model, dataset or
    protocol differ from the published one (``sasrec-ml1m``: SASRec on ML-1M, full ranking with
    the input window removed, the validation item trained on, test at the last epoch)."""
    ref = TRAIN_PRESETS["sasrec-ml1m"][1]
    same = all(getattr(cfg, f) == getattr(ref, f) for f in PUBLISHED_PROTOCOL_FIELDS if f != "objective")
    causal = cfg.causal is not False  # SASRec is causal; a run without its mask is another model
    return dict(SASREC_ML1M_REFERENCE) if same and causal and cfg.objective in ("auto", "all") else None


def train_preset(name: str, model: str | None = None) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ValueError(f"--preset {name}: unknown; presets: {', '.join(TRAIN_PRESETS)}")
    cfg = TRAIN_PRESETS[name][1]
    if model is not None:
        cfg = replace(cfg, model=model)
    return cfg


def describe() -> dict[str, str]:
    """name -> one-line description of every preset."""
    return dict(PRESETS)
