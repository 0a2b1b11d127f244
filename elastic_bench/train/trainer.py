"""Train any backend inside the recommender shell; early stopping on validation NDCG@10.

One function, :func:`train`, with the pieces it uses kept apart: data (``elastic_bench.data``),
losses (``elastic_bench.losses``), evaluation (:mod:`.evaluate`), checkpoints (:mod:`.checkpoint`).
The test metrics reported are those measured at the epoch of the best validation NDCG@10.

Under a multi-process launch (``torchrun`` / ``elastic-bench train --nproc N``, see
:mod:`.distributed`) the model is wrapped in DistributedDataParallel: every rank builds the
same global batches of ``batch_size`` examples (same seeds) and trains on its rows
``rank::world``, each rank's mean loss scaled by ``world * n_rank / n_total`` (n = trained
targets) so that DDP's gradient average is the gradient of the global batch's mean loss, as in
one process.  Evaluation is sharded across the ranks and exact (:mod:`.evaluate`), so every
rank holds the same metrics and takes the same early-stopping decisions.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.batching import iterate_batches
from ..data.formats import SequenceDataset
from ..data.splits import leave_one_out, training_examples
from ..environment import resolve_device
from ..losses import next_item_loss
from ..optimizers import build_optimizers, epochs_implementation, implementation
from .. import registry
from ..recommender import ModelConfig, SeqRecModel
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import Protocol, evaluate
from .rss import RssMeter, maxrss_mb


@dataclass
class TrainResult:
    config: TrainConfig
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    wall_s: float
    train_s: float
    train_tokens_per_s: float
    peak_mem_mb: float
    mem_method: str
    params: int
    objective: str
    protocol: str
    dataset: str
    dataset_stats: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "epochs"
    world_size: int = 1  # processes of a DistributedDataParallel run (1: one process)
    causal: bool | None = None  # whether the model's attention was causal (None: not recorded)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "dataset": self.dataset,
            "objective": self.objective,
            "causal": self.causal,
            "loss": self.config.loss,
            "eval": self.protocol,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped": self.stopped,
            "wall_s": round(self.wall_s, 1),
            "train_tokens_per_s": round(self.train_tokens_per_s),
            "peak_mem_mb": round(self.peak_mem_mb, 1),
            "mem_method": self.mem_method,
            "params": self.params,
            "world_size": self.world_size,
            "optimizer": epochs_implementation(self.history),
            **{f"valid_{k}": v for k, v in self.valid.items()},
            **{f"test_{k}": v for k, v in self.test.items()},
        }


def peak_memory(device: torch.device, meter: RssMeter | None) -> tuple[float, str]:
    """``(peak_mb, mem_method)`` of the run: CUDA's allocator peak (reset when the run
    started), or on the CPU the process's resident peak since ``meter`` started (see :mod:`.rss`)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return meter.read() if meter is not None else (maxrss_mb(), "cpu-maxrss-cumulative")


def resolve_objective(cfg: TrainConfig, causal: bool) -> str:
    objective = cfg.objective if cfg.objective != "auto" else ("all" if causal else "last")
    if objective == "all" and not causal:
        raise ValueError(
            f"--objective all needs a causal model: {cfg.model!r} is non-causal here, so every position would "
            "read its own target; use --objective last"
        )
    if objective not in ("all", "last"):
        raise ValueError(f"--objective {objective}: accepted: auto, all, last")
    return objective


def build_model(cfg: TrainConfig, n_items: int) -> SeqRecModel:
    if cfg.causal is not None:
        cap = registry.get(cfg.model).capabilities
        if not (cap.causal if cfg.causal else cap.non_causal):
            raise ValueError(f"causal={cfg.causal}: {cfg.model!r} cannot run {'causal' if cfg.causal else 'non-causal'}")
    mcfg = ModelConfig(
        backend=cfg.model,
        n_items=n_items,
        max_len=cfg.max_len,
        d_model=cfg.d_model,
        heads=cfg.heads,
        layers=cfg.layers,
        dropout=cfg.dropout,
        ffn_mult=cfg.ffn_mult,
        ffn_act=cfg.ffn_act,
        block=cfg.block,
        l2_norm=cfg.l2_norm,
        options=cfg.options,
        causal=cfg.causal,
    )
    return SeqRecModel(mcfg)


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW (fused where torch has the kernel) for dense parameters; SparseAdam for a memory bank
    with sparse gradients (:mod:`elastic_bench.optimizers`)."""
    return build_optimizers(model, lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)


class LossModule(torch.nn.Module):
    """The model and its next-item loss as one module, so that DistributedDataParallel sees the
    whole forward pass (``next_item_loss`` calls several of the model's methods)."""

    def __init__(self, model: SeqRecModel, cfg: TrainConfig, objective: str):
        super().__init__()
        self.model, self.cfg, self.objective = model, cfg, objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.cfg
        return next_item_loss(self.model, x, y, self.objective, c.loss, c.negatives, generator=generator, temperature=c.temperature, negatives_per=c.negatives_per)


def _has_unused_parameters(loss_module: LossModule, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether a training step leaves some parameter without a gradient (e.g. the last block's
    FFN of ``elastic-causal``): DDP must then be told (``find_unused_parameters``).  One probe
    step on a small batch, with the RNG states restored and the gradients dropped."""
    model = loss_module.model
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        gen = torch.Generator(device=x.device).manual_seed(0)
        loss_module(x, y, gen).backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return unused


def train(
    cfg: TrainConfig,
    dataset: SequenceDataset,
    checkpoint: Path | None = None,
    resume: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``dataset``; ``progress`` is called after every step and evaluation."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    meter = RssMeter() if device.type != "cuda" else None  # the run's own resident peak, not the process's
    distributed.init_from_env(device.type)
    rank, world, local_rank = distributed.dist_info()
    if world > 1 and device.type == "cuda":
        if cfg.device not in ("auto", "cuda"):
            raise ValueError(f"--device {cfg.device}: a multi-process run puts rank r on cuda:LOCAL_RANK; use --device cuda or auto")
        device = torch.device("cuda", local_rank)
    torch.manual_seed(cfg.seed)
    protocol = Protocol.parse(cfg.eval)
    split = leave_one_out(dataset, cfg.max_len)
    if cfg.train_on_valid:  # reproduction mode (generative-recommenders): the validation item is trained on
        split.train = [dataset.sequences[u][:-1] for u in split.test.users]
    model = build_model(cfg, dataset.n_items).to(device)
    causal = bool(model.causal)
    objective = resolve_objective(cfg, causal)
    if world > 1 and distributed.backend_for(device.type) == "nccl" and any(isinstance(m, torch.nn.Embedding) and m.sparse for m in model.modules()):
        raise ValueError("sparse_grad=True (a memory bank with sparse gradients) cannot be trained on several GPUs: NCCL has no sparse all-reduce; use one process or sparse_grad=False")
    optimizers = make_optimizers(model, cfg)
    warm = max(cfg.warmup_steps, 0)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0) for o in optimizers]
    valid_hist = [s[:-2] for s in (dataset.sequences[u] for u in split.valid.users)]
    test_hist = [s[:-1] for s in (dataset.sequences[u] for u in split.test.users)]
    counts = dataset.item_counts()
    amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad_evals": 0, "valid": {}, "test": {}, "history": [], "train_s": 0.0, "tokens": 0, "wall_s": 0.0}
    best_state = None
    if checkpoint is not None and resume and checkpoint.is_file():
        state, best_state = load_checkpoint(checkpoint, cfg, model, optimizers, schedulers)
        if rank != 0:
            best_state = None  # only rank 0 writes checkpoints
    optimizer_impl = implementation(optimizers)  # what steps from here on (a checkpoint's implementation is not resumed)
    # the run's wall time spans its resumed segments: the earlier ones' (saved at their last epoch)
    # plus this process's (a checkpoint older than this field counts from the resume on)
    wall_before = float(state.get("wall_s", 0.0))

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def evaluate_split(which: str) -> dict[str, float]:
        es, hist = (split.valid, valid_hist) if which == "valid" else (split.test, test_hist)
        return evaluate(
            model, es, hist, protocol, batch_size=cfg.eval_batch, exclude_history=cfg.exclude_history, item_counts=counts, seed=cfg.seed, rank=rank, world=world
        )

    stopped = "epochs"
    loss_module = LossModule(model, cfg, objective)
    step_module: torch.nn.Module = loss_module
    if world == 1:
        state.pop("rank_rng", None)  # another run's per-rank streams (a multi-process checkpoint resumed here)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        if state.get("gen_state") is not None:
            gen.set_state(state["gen_state"])
    else:
        # the model was initialised identically on every rank (same seed; DDP broadcasts rank 0's
        # weights anyway); dropout masks and sampled negatives get a stream per rank
        rank_rng = state.get("rank_rng")
        gen = torch.Generator(device=device)
        if rank_rng is not None and len(rank_rng) == world:  # resuming a run of the same world size
            mine = rank_rng[rank]
            torch.set_rng_state(mine["torch"])
            if mine.get("cuda") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], device)
            gen.set_state(mine["gen"])
        else:  # a fresh run, or a checkpoint of another world size: fresh per-rank streams
            torch.manual_seed(distributed.seed_for(cfg.seed, rank, state["epoch"]))
            gen.manual_seed(distributed.seed_for(cfg.seed, rank, state["epoch"], 1))
        probe_x, probe_y, _ = next(
            iterate_batches(*training_examples(split.train[:8], objective, cfg.max_len, np.random.default_rng(0), 1), 4, None, device, aligned=objective == "all"),
            (None, None, None),
        )
        unused = probe_x is not None and _has_unused_parameters(loss_module, probe_x, probe_y)
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        step_module = torch.nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=unused, **ddp_kw)
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([cfg.seed, epoch])
        inputs, targets = training_examples(split.train, objective, cfg.max_len, rng, cfg.last_cuts)
        if not inputs:
            raise ValueError("no training examples: every user's training part has fewer than 2 items")
        model.train()
        t0 = time.perf_counter()
        losses = []
        n_batches = math.ceil(len(inputs) / cfg.batch_size)
        for step, (x, y, _) in enumerate(iterate_batches(inputs, targets, cfg.batch_size, rng, device, aligned=objective == "all")):
            if world > 1:  # every rank holds the same global batch: train on rows rank::world
                xr, yr = x[rank::world].contiguous(), y[rank::world].contiguous()
                n_total, n_rank = int((y != 0).sum()), int((yr != 0).sum())
                weight = world * n_rank / n_total  # DDP averages: sum_r weight_r * grad_r / world = global-batch mean
                if n_rank == 0:  # a short last batch left this rank no rows: take part with a zero-weight row
                    xr, yr = x[:1], y[:1]
            else:
                xr, yr, weight = x, y, 1.0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = step_module(xr, yr, gen)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            (loss * weight if world > 1 else loss).backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse], cfg.clip)
            for o, s in zip(optimizers, schedulers):
                o.step()
                s.step()
            if world > 1:  # the global batch's mean loss, as one process reports it
                lv = distributed.all_reduce_sum(torch.tensor([loss.item() * weight / world], dtype=torch.float64)).item()
            else:
                lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"non-finite loss {lv} at epoch {epoch} step {step}")
            losses.append(lv)
            state["tokens"] += int((x != 0).sum())
            if progress:
                progress({"event": "step", "epoch": epoch, "step": step + 1, "steps": n_batches, "loss": lv})
        state["train_s"] += time.perf_counter() - t0
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "epoch_s": time.perf_counter() - t0, "optimizer": optimizer_impl}
        state["epoch"] = epoch
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            valid = evaluate_split("valid")
            record.update({f"valid_{k}": v for k, v in valid.items() if k != "n_eval"})
            if cfg.train_on_valid:  # no clean validation set: report the last epoch, as the reference does
                state.update(best=valid["ndcg@10"], best_epoch=epoch, valid=valid, test=evaluate_split("test"))
            elif valid["ndcg@10"] > state["best"]:
                state.update(best=valid["ndcg@10"], best_epoch=epoch, bad_evals=0, valid=valid)
                state["test"] = evaluate_split("test")
                if rank == 0:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                state["bad_evals"] += 1
            record["best_valid_ndcg@10"] = state["best"]
        state["history"].append(record)
        state["gen_state"] = gen.get_state()
        state["wall_s"] = wall()
        if progress:
            progress({"event": "epoch", **record, "wall_s": state["wall_s"]})
        if checkpoint is not None:
            if world > 1:  # every rank's RNG streams, so that a resumed run continues them
                mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None, "gen": gen.get_state()}
                state["rank_rng"] = distributed.all_gather_object(mine)
            if rank == 0:
                save_checkpoint(checkpoint, cfg, model, optimizers, schedulers, state, best_state)
            distributed.barrier()
        if cfg.patience and state["bad_evals"] >= cfg.patience:
            stopped = f"early-stop (no better validation NDCG@10 in {cfg.patience} evaluations)"
            break
        # one decision for all ranks (their clocks differ): rank 0's
        if cfg.max_minutes and distributed.broadcast_flag(wall() > cfg.max_minutes * 60):
            stopped = f"time budget ({cfg.max_minutes:g} min)"
            break
    peak, method = peak_memory(device, meter)
    train_s = state["train_s"]
    if world > 1:  # the largest peak of any rank; the slowest rank's training time (tokens are the global batches')
        peak = distributed.all_reduce_max(torch.tensor([peak], dtype=torch.float64)).item()
        train_s = distributed.all_reduce_max(torch.tensor([train_s], dtype=torch.float64)).item()
    return TrainResult(
        config=cfg,
        valid=state["valid"],
        test=state["test"],
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        wall_s=wall(),
        train_s=train_s,
        train_tokens_per_s=state["tokens"] / max(train_s, 1e-9),
        peak_mem_mb=peak,
        mem_method=method,
        params=model.num_parameters(),
        objective=objective,
        causal=causal,
        protocol=protocol.label,
        dataset=dataset.name,
        dataset_stats=dataset.stats(),
        history=state["history"],
        stopped=stopped,
        world_size=world,
    )
