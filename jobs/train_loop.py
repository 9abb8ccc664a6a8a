"""The worker side of training: one loop for every model family, run by each Ray Train worker.

Per optimiser step: ``grad_accum`` batches are gathered, then each of the model's phases (GANs have two)
runs forward/backward over all of them (DDP synchronises only on the last one), clips, steps its optimiser
and its learning-rate schedule (linear warm-up, then cosine decay to ``min_lr_ratio``), and calls
``after_step`` (EMA weights). After every epoch the loss on the validation shard is averaged over all
workers. Checkpoints hold the weights (safetensors), optimiser and schedule states, RNG states, the step and
the metrics so far; a restarted worker group (a worker died) continues from the latest one and records it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import ray.train.torch
import torch

import aigc_models


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (so ``torch.load(weights_only=True)`` reads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(x) for x in internal), gauss_next))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _optimizer_step(model: Any, ddp: Any, optimizers: dict, schedulers: dict, group: list[dict], cfg: dict,
                    autocast: dict) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for phase in model.phases:
        optimizers[phase].zero_grad(set_to_none=True)
        for i, batch in enumerate(group):
            last = i == len(group) - 1
            sync = contextlib.nullcontext() if last or not hasattr(ddp, "no_sync") else ddp.no_sync()
            with sync:
                with torch.autocast(**autocast):
                    loss, m = ddp(phase, batch)
                (loss / len(group)).backward()
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / len(group)
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.phase_parameters(phase), cfg["grad_clip"])
        optimizers[phase].step()
        schedulers[phase].step()
        model.after_step(phase)
    return metrics


@torch.no_grad()
def _validate(model: Any, shard: Any, cfg: dict, device: torch.device, autocast: dict) -> dict[str, float]:
    """Mean of every phase's metrics over the validation shard, then over the workers (weighted by rows).
    Noise is seeded, so the same weights always give the same validation loss."""
    if shard is None:
        return {}
    was_training = model.training
    model.eval()
    cpu_state = torch.get_rng_state()
    torch.manual_seed(cfg["seed"])
    sums: dict[str, float] = {}
    rows = 0
    try:
        for columns in shard.iter_batches(batch_size=cfg["batch_size"], batch_format="numpy"):
            batch = {k: v.to(device) for k, v in model.make_batch(columns).items()}
            n = len(next(iter(columns.values())))
            for phase in model.phases:
                with torch.autocast(**autocast):
                    _, m = model(phase, batch)
                for k, v in m.items():
                    sums[f"val_{k}"] = sums.get(f"val_{k}", 0.0) + float(v) * n
            rows += n
    finally:
        torch.set_rng_state(cpu_state)
        model.train(was_training)
    keys = sorted(sums)
    totals = torch.tensor([sums[k] for k in keys] + [float(rows)], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)} if totals[-1] > 0 else {}


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg["seed"] * 1000 + rank)
    device = ray.train.torch.get_device()
    model = aigc_models.build(cfg["family"], cfg["model_config"])
    optimizers, schedulers = {}, {}
    for phase in model.phases:
        s = model.optimizer_settings(phase)
        optimizers[phase] = torch.optim.AdamW(model.phase_parameters(phase), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        schedulers[phase] = torch.optim.lr_scheduler.LambdaLR(optimizers[phase], lambda step: lr_factor(
            step, cfg["total_steps"], cfg["warmup_steps"], cfg["lr_schedule"], cfg["min_lr_ratio"]))

    epoch0, step, history, resumed_from = 0, 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker group, or a resumed run: continue where the checkpoint left off
        with checkpoint.as_directory() as d:
            model.load_state_dict(aigc_models.load(os.path.join(d, "model.safetensors")).state_dict())
            state = torch.load(os.path.join(d, "train_state.pt"), weights_only=True)
            for phase in model.phases:
                optimizers[phase].load_state_dict(state["optimizers"][phase])
                schedulers[phase].load_state_dict(state["schedulers"][phase])
            if rank < len(state["rng"]):
                _set_rng_state(state["rng"][rank])
            epoch0, step = state["epoch"], state["step"]
            resumed_from = {"step": step, "epoch": epoch0, "previous": state.get("resumed_from")}
            history = pd.read_parquet(os.path.join(d, "metrics.parquet")).to_dict("records")

    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": len(model.phases) > 1})
    autocast = {"device_type": device.type, "dtype": torch.bfloat16,
                "enabled": device.type == "cuda" and cfg["precision"] != "fp32"}
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if cfg["validate"] else None
    started, done = time.time(), bool(cfg["max_steps"] and step >= cfg["max_steps"])
    for epoch in range(epoch0, cfg["epochs"]):
        if done:
            break
        t0, rows, sums, n, waited, group = time.time(), 0, {}, 0, 0.0, []
        t_wait = time.time()
        batches = shard.iter_batches(batch_size=cfg["batch_size"], batch_format="numpy", prefetch_batches=2)
        for i, columns in enumerate(batches):
            waited += time.time() - t_wait
            group.append({k: v.to(device, non_blocking=True) for k, v in model.make_batch(columns).items()})
            rows += len(next(iter(columns.values())))
            if len(group) == cfg["grad_accum"]:
                metrics = _optimizer_step(model, ddp, optimizers, schedulers, group, cfg, autocast)
                group, step, n = [], step + 1, n + 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                if cfg["max_steps"] and step >= cfg["max_steps"]:
                    done = True
                    break
            t_wait = time.time()
        if group:  # the epoch's last, short accumulation group still counts
            metrics = _optimizer_step(model, ddp, optimizers, schedulers, group, cfg, autocast)
            step, n = step + 1, n + 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        seconds = time.time() - t0
        row = {"epoch": epoch + 1, "step": step, "seconds": seconds, "lr_factor": schedulers[model.phases[0]].get_last_lr()[0]
               / optimizers[model.phases[0]].defaults["lr"], "samples_per_second": rows * world / max(seconds, 1e-9),
               "data_wait_share": waited / max(seconds, 1e-9), **{k: v / max(n, 1) for k, v in sums.items()},
               **_validate(model, val_shard, cfg, device, autocast)}
        history.append(row)
        last = done or epoch + 1 == cfg["epochs"]
        if rank == 0:
            print(f"[{cfg['name']}] epoch {epoch + 1}/{cfg['epochs']} step {step} "
                  + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "step")), flush=True)
        if last or (epoch + 1) % cfg["checkpoint_every"] == 0:
            rng: list = [None] * world  # every worker's RNG states, so a restart draws what it would have
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_gather_object(rng, _rng_state())
            else:
                rng = [_rng_state()]
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    aigc_models.save(model, os.path.join(d, "model.safetensors"))
                    torch.save({"optimizers": {p: o.state_dict() for p, o in optimizers.items()},
                                "schedulers": {p: s.state_dict() for p, s in schedulers.items()}, "rng": rng,
                                "epoch": epoch + 1, "step": step, "resumed_from": resumed_from},
                               os.path.join(d, "train_state.pt"))
                    pd.DataFrame(history).to_parquet(os.path.join(d, "metrics.parquet"))
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
        else:
            ray.train.report(row)
    if rank == 0:
        print(f"[{cfg['name']}] finished {step} steps in {time.time() - started:.1f}s", flush=True)
