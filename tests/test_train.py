"""Metrics on hand-computed rankings, evaluation protocols, losses, and a tiny training run that learns."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from elastic_bench.data.splits import EvalSet
from elastic_bench.data.synthetic import synthetic
from elastic_bench.losses import next_item_loss
from elastic_bench.metrics import metrics_from_ranks, target_ranks
from elastic_bench.presets import SASREC_ML1M_REFERENCE, train_preset
from elastic_bench.recommender import ModelConfig, SeqRecModel
from elastic_bench.train.config import TrainConfig
from elastic_bench.train.evaluate import Protocol, evaluate
from elastic_bench.train.trainer import train


def test_metrics_on_hand_computed_ranks():
    # ranks 0, 2, 9, 10, 60 (0-based) for five users
    m = metrics_from_ranks(np.array([0, 2, 9, 10, 60]), ks=(10, 50, 200))
    assert m["hr@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert m["hr@50"] == pytest.approx(4 / 5)
    assert m["mrr@50"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11) / 5)
    assert m["hr@200"] == pytest.approx(1.0)
    assert m["ndcg@200"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11) + 1 / math.log2(12) + 1 / math.log2(62)) / 5)


def test_target_ranks_counts_strictly_higher_scores():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.3, 0.3, 0.2]])
    ranks = target_ranks(scores, torch.tensor([2, 1]))
    assert ranks.tolist() == [2, 0]  # 0.9, 0.7 above 0.5; ties count for the target


class FixedScores(torch.nn.Module):
    """A 'model' whose scores for every user are a fixed row: evaluation checked by hand."""

    def __init__(self, row: list[float]):
        super().__init__()
        self.row = torch.tensor(row)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cfg = ModelConfig("softmax", n_items=len(row) - 1, max_len=10)

    def user_repr(self, items):
        return torch.zeros(items.shape[0], 1)

    def scores(self, h):
        return self.row.expand(h.shape[0], -1).clone()


def test_full_ranking_with_and_without_history_exclusion():
    # items 1..6 score 6,5,4,3,2,1: item 1 best
    model = FixedScores([100.0, 6, 5, 4, 3, 2, 1])
    split = EvalSet([np.array([1, 2]), np.array([5])], np.array([3, 6]), np.array([0, 1]))
    hist = [np.array([1, 2]), np.array([5])]
    m = evaluate(model, split, hist, ks=(1, 3, 10))
    # user 0: target 3 has rank 2; user 1: target 6 rank 5 (padding column never counts)
    assert m["hr@3"] == pytest.approx(0.5) and m["hr@10"] == 1.0 and m["hr@1"] == 0.0
    m = evaluate(model, split, hist, ks=(1, 3, 10), exclude_history="all")
    # history removed: user 0 target 3 now first; user 1 target 6 now rank 4
    assert m["hr@1"] == pytest.approx(0.5) and m["mrr@10"] == pytest.approx((1 + 1 / 5) / 2)
    # only the input window (user 0's window is [2]: item 1 stays rankable)
    split_w = EvalSet([np.array([2]), np.array([5])], np.array([3, 6]), np.array([0, 1]))
    m = evaluate(model, split_w, hist, ks=(1, 3, 10), exclude_history="input")
    assert m["hr@1"] == 0.0 and m["mrr@10"] == pytest.approx((1 / 2 + 1 / 5) / 2)
    with pytest.raises(ValueError, match="exclude-history"):
        evaluate(model, split, hist, exclude_history="yes")


def test_nan_scores_never_rank_the_target_first():
    scores = torch.tensor([[0.0, float("nan"), 0.5, 0.2], [0.0, 0.9, 0.5, float("nan")]])
    ranks = target_ranks(scores, torch.tensor([1, 2]))
    assert ranks[0] == 3  # NaN target: last among the 4 columns
    assert ranks[1] >= 1  # a NaN competitor counts against the target


def test_sampled_protocol_is_labelled_and_excludes_history():
    assert Protocol.parse("full").label == "full"
    assert Protocol.parse("sampled:100").label == "sampled:100:uniform"
    assert Protocol.parse("sampled:5:pop").label == "sampled:5:pop"
    for bad in ("sampled", "sampled:0", "sampled:x", "sampled:5:zipf", "top"):
        with pytest.raises(ValueError, match="accepted forms"):
            Protocol.parse(bad)
    # target is the worst item but history items are never negatives: with 2 negatives from
    # {4, 5, 6} (items 1-2 seen), target 3 ranks 0 always since 4, 5, 6 score lower
    model = FixedScores([0.0, 6, 5, 4, 3, 2, 1])
    split = EvalSet([np.array([1, 2])], np.array([3]), np.array([0]))
    m = evaluate(model, split, [np.array([1, 2])], Protocol.parse("sampled:2"), ks=(1,))
    assert m["hr@1"] == 1.0


def test_losses_temperature_and_l2norm():
    torch.manual_seed(0)
    cfg = ModelConfig.make("softmax", n_items=20, max_len=8, d_model=16, heads=2, layers=1, dropout=0.0, l2_norm=True)
    model = SeqRecModel(cfg)
    items = torch.randint(1, 21, (4, 8))
    targets = torch.randint(1, 21, (4, 8))
    l1 = next_item_loss(model, items, targets, "all", "full", temperature=1.0)
    l2 = next_item_loss(model, items, targets, "all", "full", temperature=0.05)
    assert l1.item() != pytest.approx(l2.item())
    assert l1.item() < math.log(20) + 1  # cosine logits in [-1, 1]: near uniform at T=1
    s = next_item_loss(model, items, targets, "all", "sampled", negatives=8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(s)
    p = next_item_loss(model, items, targets, "all", "sampled", negatives=8, negatives_per="position")
    assert torch.isfinite(p) and p.item() < math.log(9) + 1
    with pytest.raises(ValueError, match="negatives_per"):
        next_item_loss(model, items, targets, "all", "sampled", negatives_per="batch")
    with pytest.raises(ValueError, match="temperature"):
        next_item_loss(model, items, targets, "all", temperature=0.0)


def test_objective_all_is_refused_for_non_causal_models():
    ds = synthetic(n_users=30, n_items=20, lengths="fixed:8")
    cfg = TrainConfig(model="elastic", objective="all", epochs=1, d_model=16).with_options(experts=4, memory_size=16)
    with pytest.raises(ValueError, match="needs a causal model"):
        train(cfg, ds)


def test_no_target_in_its_own_input_for_every_backend_and_objective():
    """The model-level guarantee behind both objectives: a causal model's output at t never
    depends on items after t (so `all` never reads its targets); `last` inputs end before their target."""
    torch.manual_seed(0)
    for backend in ("softmax", "linear", "elastic-causal", "sdpa"):
        opts = {"experts": 4} if backend.startswith("elastic") else {}
        model = SeqRecModel(ModelConfig.make(backend, n_items=30, max_len=12, d_model=16, heads=2, layers=2, dropout=0.0, options=opts)).eval()
        assert model.causal
        items = torch.randint(1, 31, (2, 12))
        h = model(items)
        other = items.clone()
        other[:, 6:] = torch.randint(1, 31, (2, 6))
        torch.testing.assert_close(model(other)[:, :6], h[:, :6], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model,opts", [("softmax", {}), ("elastic", {"experts": 8, "memory_size": 256})])
def test_tiny_training_run_learns(model, opts):
    """Seconds on CPU: test HR@10 far above a random ranker's 10/n_items."""
    ds = synthetic(n_users=400, n_items=100, lengths="uniform:10..30", follow=0.9, branch=2, seed=1)
    cfg = TrainConfig(model=model, max_len=30, d_model=32, heads=2, layers=1, dropout=0.0, epochs=6, batch_size=32, lr=5e-3, eval_batch=512).with_options(**opts)
    result = train(cfg, ds)
    assert result.test["hr@10"] > 5 * 10 / 100, result.test
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.protocol == "full" and result.params > 0 and result.peak_mem_mb > 0


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_checkpoint_resume_continues_the_same_run(tmp_path, loss):
    ds = synthetic(n_users=60, n_items=40, lengths="fixed:10", seed=2)
    cfg = TrainConfig(model="softmax", max_len=10, d_model=16, heads=2, layers=1, dropout=0.1, epochs=3, batch_size=16, patience=0, loss=loss, negatives=8)
    full = train(cfg, ds)
    ckpt = tmp_path / "run.pt"
    train(dataclasses.replace(cfg, epochs=2), ds, checkpoint=ckpt)  # "interrupted" after 2 epochs
    with pytest.raises(ValueError, match="another configuration"):
        train(dataclasses.replace(cfg, lr=0.5), ds, checkpoint=ckpt)
    before = torch.load(ckpt, map_location="cpu", weights_only=False)["state"]["wall_s"]
    assert before >= sum(h["epoch_s"] for h in full.history[:2]) * 0.5 > 0
    resumed = train(cfg, ds, checkpoint=ckpt)
    assert resumed.epochs_run == 3
    # the run's wall time spans both segments, not only the resumed one
    assert resumed.wall_s >= before + resumed.history[-1]["epoch_s"]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)
    assert resumed.test["ndcg@10"] == pytest.approx(full.test["ndcg@10"], rel=1e-5)


def test_sasrec_preset_is_the_published_setting():
    cfg = train_preset("sasrec-ml1m")
    assert (cfg.layers, cfg.heads, cfg.d_model, cfg.dropout, cfg.max_len) == (2, 1, 50, 0.2, 200)
    assert (cfg.loss, cfg.negatives, cfg.negatives_per, cfg.temperature, cfg.l2_norm) == ("sampled", 128, "position", 0.05, True)
    assert (cfg.batch_size, cfg.lr, cfg.ffn_mult, cfg.ffn_act, cfg.block) == (128, 1e-3, 1, "relu", "sasrec")
    assert SASREC_ML1M_REFERENCE["ndcg@10"] == 0.1603
    with pytest.raises(ValueError, match="unknown"):
        train_preset("nope")


def test_last_objective_cuts_and_train_on_valid():
    from elastic_bench.data.splits import training_examples

    train_seqs = [np.arange(1, 12)]
    inputs, targets = training_examples(train_seqs, "last", 50, np.random.default_rng(0), cuts=4)
    assert 4 <= len(inputs) <= 5  # 4 random prefixes, plus the full prefix unless drawn
    for x, y in zip(inputs, targets):
        assert y[0] == x[-1] + 1  # the target is the item right after the prefix
    assert any(len(x) == 10 for x in inputs)
    ds = synthetic(n_users=40, n_items=30, lengths="fixed:8", seed=4)
    cfg = TrainConfig(model="softmax", max_len=8, d_model=16, heads=2, layers=1, dropout=0.0, epochs=2, batch_size=16, train_on_valid=True)
    result = train(cfg, ds)
    assert result.best_epoch == 2  # reproduction mode: the last epoch is reported


def test_sasrec_block_style():
    """SASRec's block: keys/values from the un-normalised input, no final LayerNorm,
    xavier-initialised block weights; still causal, padding-invariant and trainable."""
    from elastic_bench.layers import Block

    torch.manual_seed(0)
    cfg = ModelConfig.make("softmax", n_items=30, max_len=12, d_model=16, heads=1, layers=2, dropout=0.0, block="sasrec")
    model = SeqRecModel(cfg).eval()
    assert isinstance(model.final_ln, torch.nn.Identity)
    blk = model.encoder.blocks[0]
    assert blk.style == "sasrec"
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    q = blk.ln1(x)
    y = blk.ln2(q + blk.attn(q, mask, kv=x))
    torch.testing.assert_close(blk(x, mask), y + blk.ffn(y))
    assert not torch.allclose(blk.attn(q, mask, kv=x), blk.attn(q, mask))  # K/V really come from x
    items = torch.randint(1, 31, (2, 12))
    other = items.clone()
    other[:, 6:] = torch.randint(1, 31, (2, 6))
    torch.testing.assert_close(model(other)[:, :6], model(items)[:, :6], rtol=1e-5, atol=1e-5)
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), items[:, 3:]], 1)
    torch.testing.assert_close(model(padded)[:, 3:], model(items[:, 3:]), rtol=1e-5, atol=1e-5)  # left padding changes nothing
    # elastic accepts the style too (its LDA reads keys/values from the normalised input)
    e = SeqRecModel(ModelConfig.make("elastic", n_items=30, max_len=12, d_model=16, heads=2, layers=1, dropout=0.0, block="sasrec", options={"experts": 4, "memory_size": 16}))
    assert all(b.style == "sasrec" for b in e.encoder.blocks)
    assert torch.isfinite(e(items)).all()
    with pytest.raises(ValueError, match="block style"):
        Block(blk.attn, 16, style="post-ln")


def test_block_field_keeps_existing_hashes():
    """Results stores and checkpoints written before --block existed keep resuming."""
    base = TrainConfig()
    # the hashes of the default config as computed before the block field existed (commit d94d34b)
    assert (base.config_hash(), base.checkpoint_key()) == ("365ed73e4f8c1240", "a253637ab5142d6b")
    assert dataclasses.replace(base, block="sasrec").config_hash() != base.config_hash()
    assert dataclasses.replace(base, block="sasrec").checkpoint_key() != base.checkpoint_key()


def test_causal_field_keeps_hashes_and_trains_exact_attention_bidirectionally():
    """causal=None hashes as before the field existed; causal=False trains softmax without its mask
    (objective last) and the row says so; a backend without that causality is refused."""
    base = TrainConfig()
    assert dataclasses.replace(base, causal=None).config_hash() == base.config_hash() == "365ed73e4f8c1240"
    assert dataclasses.replace(base, causal=False).config_hash() != base.config_hash()
    ds = synthetic(n_users=30, n_items=20, lengths="fixed:8")
    res = train(TrainConfig(model="softmax", causal=False, epochs=1, d_model=16, heads=1), ds)
    assert res.causal is False and res.objective == "last"  # auto resolves to last for a non-causal model
    assert train(TrainConfig(model="softmax", epochs=1, d_model=16, heads=1), ds).causal is True
    from elastic_bench.train.rows import accuracy_row

    row = accuracy_row(res, "r")
    assert row["causal"] is False and "causal=False" in row["options"].split(";")
    from elastic_bench.train.trainer import build_model

    model = build_model(TrainConfig(model="softmax", causal=False, d_model=16, heads=1), 20)
    layers = [m for m in model.modules() if m is not model and hasattr(m, "causal")]
    assert layers and not any(m.causal for m in layers)  # every attention layer runs without its mask
    with pytest.raises(ValueError, match="needs a causal model"):
        train(TrainConfig(model="softmax", causal=False, objective="all", epochs=1, d_model=16, heads=1), ds)
    with pytest.raises(ValueError, match="'elastic' cannot run causal"):
        train(TrainConfig(model="elastic", causal=True, epochs=1, d_model=16).with_options(experts=4, memory_size=16), ds)
