"""The optimisation step every trainer shares (Ray Train workers and plain single-process loops alike):
AdamW per model phase, a warm-up + cosine learning-rate schedule, gradient accumulation and clipping, and
autocast. Pure torch, so a GPU machine without Ray runs exactly the step the cluster runs."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable

import torch

from .base import GenerativeModel


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizers(model: GenerativeModel, total_steps: int, warmup_steps: int = 0, schedule: str = "constant",
                    min_lr_ratio: float = 0.1) -> tuple[dict, dict]:
    """An AdamW optimiser and a LambdaLR schedule per phase, with the family's optimiser settings."""
    optimizers, schedulers = {}, {}
    for phase in model.phases:
        s = model.optimizer_settings(phase)
        optimizers[phase] = torch.optim.AdamW(model.phase_parameters(phase), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        schedulers[phase] = torch.optim.lr_scheduler.LambdaLR(
            optimizers[phase], lambda step: lr_factor(step, total_steps, warmup_steps, schedule, min_lr_ratio))
    return optimizers, schedulers


def optimizer_step(model: GenerativeModel, ddp: Any, optimizers: dict, schedulers: dict, group: list[dict],
                   grad_clip: float | None, autocast: dict) -> dict[str, float]:
    """One optimiser step per phase over ``group`` (gradient accumulation: DDP synchronises on the last batch
    only). ``ddp`` is the wrapped model (or ``model`` itself in a single process). Returns the mean metrics."""
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
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.phase_parameters(phase), grad_clip)
        optimizers[phase].step()
        schedulers[phase].step()
        model.after_step(phase)
    return metrics


@torch.no_grad()
def fit_to_data(model: GenerativeModel, batches: Iterable[dict[str, torch.Tensor]], autocast: dict | None = None,
                reduce: Callable[[torch.Tensor], None] | None = None) -> None:
    """One pass over the training batches (already on the model's device) in eval mode, summing each batch's
    ``fit_statistics``; ``reduce`` sums a tensor in place over the workers (``torch.distributed.all_reduce``) so
    every worker fits the same state from the whole split. Families that fit nothing skip the pass."""
    if not model.fits_data:
        return
    was_training = model.training
    model.eval()
    sums = model.fit_statistics(None)
    try:
        for batch in batches:
            with torch.autocast(**(autocast or {"device_type": "cpu", "enabled": False})):
                stats = model.fit_statistics(batch)
            for k, v in stats.items():
                sums[k] += v
        for k in sorted(sums):  # the same order on every worker
            if reduce is not None:
                reduce(sums[k])
        model.fit(sums)
    finally:
        model.train(was_training)
