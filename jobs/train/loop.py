"""The worker side of training: one loop for every model family, run by each Ray Train worker.

Per optimiser step: ``grad_accum`` batches are gathered and ``aigc_models.training.optimizer_step`` runs every
phase of the model over them (GANs have two; DDP synchronises on the last batch only). Every ``log_every`` steps
a metrics row (scope "step"); after every epoch the loss on the validation shard, averaged over all workers
(scope "epoch"). Checkpoints (every ``checkpoint_every`` epochs and, optionally, every ``checkpoint_every_steps``
steps; ``jobs.train.checkpoints``) let a restarted worker group (a worker died) or a resumed run continue from
the latest one, skipping the batches the interrupted epoch had consumed, and record that it resumed.

The driver hands the loop a ``LoopConfig`` (as the dict Ray Train carries); the model knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

import aigc_models
from aigc_models.text import DEFAULT_PROMPTS
from aigc_models.training import fit_to_data, make_optimizers, optimizer_step
from jobs.runtime import faults
from jobs.train import checkpoints


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Everything a worker needs, decided on the driver (``jobs.train.run``)."""

    name: str
    family: str
    model_config: dict[str, Any]
    seed: int
    epochs: int
    max_steps: int | None
    batch_size: int  # per worker
    total_steps: int  # optimiser steps of the whole run, for the learning-rate schedule
    checkpoint_every: int
    checkpoint_every_steps: int | None
    log_every: int
    grad_clip: float | None
    grad_accum: int
    precision: str
    warmup_steps: int
    lr_schedule: str
    min_lr_ratio: float
    validate: bool
    epoch_samples: bool
    keep_batches: bool = False  # the splits are small: iterate the first epoch's batches again from memory
    faults: faults.Plan | None = None  # never part of the run's fingerprint

    def fingerprint_fields(self) -> dict[str, Any]:
        """What decides the weights a run produces (an interrupted run resumes only when these are equal)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("faults", "keep_batches")}


@torch.no_grad()
def _validate(model: Any, batches: Iterable[dict] | None, cfg: LoopConfig, device: torch.device,
              autocast: dict) -> dict[str, float]:
    """Mean of every phase's metrics over the validation shard's ``batches``, then over the workers (weighted by
    rows). Noise is seeded, so the same weights always give the same validation loss."""
    if batches is None:
        return {}
    was_training, cpu_state = model.training, torch.get_rng_state()
    model.eval()
    torch.manual_seed(cfg.seed)
    sums: dict[str, float] = {}
    rows = 0
    try:
        for columns in batches:
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


def _epoch_samples(model: Any) -> Any:
    """Fixed-seed samples after an epoch (one image per class, up to 10, or two texts), so the registry can show
    how the samples changed epoch by epoch. The training RNG streams are left untouched."""
    cuda = [p.device.index or 0 for p in model.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=cuda):
        if model.modality == "image":
            classes = list(getattr(model.config, "classes", None) or [None])[:10]
            return np.stack(model.sample(classes, seeds=list(range(len(classes)))))
        return model.sample(list(DEFAULT_PROMPTS[:2]), seeds=[0, 1], max_new_tokens=48)


class _Worker:
    """One worker's training state: the model and its DDP wrapper, optimisers and schedules, the position, the
    metrics history and the per-epoch samples."""

    def __init__(self, cfg: LoopConfig) -> None:
        ctx = ray.train.get_context()
        self.cfg, self.rank, self.world = cfg, ctx.get_world_rank(), ctx.get_world_size()
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        self.device = ray.train.torch.get_device()
        self.model = aigc_models.build(cfg.family, cfg.model_config)
        self.optimizers, self.schedulers = make_optimizers(self.model, cfg.total_steps, cfg.warmup_steps,
                                                           cfg.lr_schedule, cfg.min_lr_ratio)
        self.epoch0 = self.skip = self.step = 0
        self.history: list[dict] = []
        self.progress: list[dict] = []
        self.resumed_from: dict | None = None
        self._resume()
        self.ddp = ray.train.torch.prepare_model(self.model, parallel_strategy_kwargs={
            "find_unused_parameters": len(self.model.phases) > 1})
        self.workers = checkpoints.all_gather(checkpoints.worker_info(self.rank, self.device), self.world)
        self.autocast = {"device_type": self.device.type, "dtype": torch.bfloat16,
                         "enabled": self.device.type == "cuda" and cfg.precision != "fp32"}
        self.shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val") if cfg.validate else None
        self.kept: dict[str, list[dict]] = {}

    def batches(self, split: str, **options: Any) -> Iterator[dict]:
        """The split's batches for one epoch. With ``keep_batches`` (a split the driver found small) the first
        whole pass is kept and later epochs replay it: the same batches in the same order as a fresh pass of the
        deterministic split (``jobs.train.data.data_config``), without a Ray Data execution in the split's
        coordinator every epoch competing with the training step for the CPUs."""
        if split in self.kept:
            yield from self.kept[split]
            return
        shard = self.shard if split == "train" else self.val_shard
        seen: list[dict] = []
        for columns in shard.iter_batches(batch_size=self.cfg.batch_size, batch_format="numpy", **options):
            if self.cfg.keep_batches:
                seen.append(columns)
            yield columns
        if self.cfg.keep_batches:  # only a pass that ran to its end
            self.kept[split] = seen

    def _resume(self) -> None:
        """A restarted worker group, or a resumed run: continue where the latest checkpoint left off."""
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return
        with checkpoint.as_directory() as d:
            model, state, metrics, self.progress = checkpoints.read(d)
        self.model.load_state_dict(model.state_dict())
        for phase in self.model.phases:
            self.optimizers[phase].load_state_dict(state["optimizers"][phase])
            self.schedulers[phase].load_state_dict(state["schedulers"][phase])
        if self.rank < len(state["rng"]):
            checkpoints.set_rng_state(state["rng"][self.rank])
        self.epoch0, self.skip, self.step = state["epoch"], state.get("batch", 0), state["step"]
        self.resumed_from = {"step": self.step, "epoch": self.epoch0, "batch": self.skip, "previous": state.get("resumed_from")}
        self.history = metrics.to_dict("records")

    def lr_factor(self) -> float:
        first = self.model.phases[0]
        return self.schedulers[first].get_last_lr()[0] / self.optimizers[first].defaults["lr"]

    def save(self, row: dict, epoch_done: int, batch: int) -> None:
        """Reports ``row`` with a checkpoint at this position (completed epochs + batches into the next)."""
        rng = checkpoints.all_gather(checkpoints.rng_state(), self.world)  # every worker's: a restart draws the same
        with tempfile.TemporaryDirectory() as d:
            if self.rank == 0:
                state = {"optimizers": {p: o.state_dict() for p, o in self.optimizers.items()},
                         "schedulers": {p: s.state_dict() for p, s in self.schedulers.items()}, "rng": rng,
                         "epoch": epoch_done, "batch": batch, "step": self.step, "resumed_from": self.resumed_from,
                         "workers": self.workers}
                checkpoints.write(d, self.model, state, self.history, self.progress)
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d) if self.rank == 0 else None)
        checkpoints.after_checkpoint(self.cfg.faults, self.cfg.name, self.rank, self.world, self.step)

    def done(self) -> bool:
        return bool(self.cfg.max_steps and self.step >= self.cfg.max_steps)

    def run_epoch(self, epoch: int) -> tuple[dict[str, float], int, float, float]:
        """One epoch's optimiser steps: (summed metrics, steps taken, rows seen, seconds waited for data)."""
        cfg, sums, n, rows, waited, group = self.cfg, {}, 0, 0, 0.0, []
        window: dict[str, float] = {}
        t_window, rows_window, n_window = time.time(), 0, 0
        skip, self.skip = self.skip, 0  # batches of this epoch a mid-epoch checkpoint had already consumed
        t_wait = time.time()
        for i, columns in enumerate(self.batches("train", prefetch_batches=2)):
            if i < skip:
                t_wait = time.time()
                continue
            waited += time.time() - t_wait
            group.append({k: v.to(self.device, non_blocking=True) for k, v in self.model.make_batch(columns).items()})
            batch_rows = len(next(iter(columns.values())))
            rows, rows_window = rows + batch_rows, rows_window + batch_rows
            if len(group) == cfg.grad_accum:
                metrics = self._optimizer_step(group)
                group, n, n_window = [], n + 1, n_window + 1
                for k, v in metrics.items():
                    sums[k], window[k] = sums.get(k, 0.0) + v, window.get(k, 0.0) + v
                if cfg.log_every and self.step % cfg.log_every == 0:  # per-step row: the window's means
                    seconds = time.time() - t_window
                    self.history.append({"scope": "step", "epoch": epoch + 1, "step": self.step, "seconds": seconds,
                                         "lr_factor": self.lr_factor(),
                                         "samples_per_second": rows_window * self.world / max(seconds, 1e-9),
                                         **{k: v / n_window for k, v in window.items()}})
                    window, t_window, rows_window, n_window = {}, time.time(), 0, 0
                checkpoints.after_step(cfg.faults, cfg.name, self.rank, self.step)
                if self.done():
                    break
                if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                    self.save({"epoch": epoch + 1, "step": self.step}, epoch, i + 1)
            t_wait = time.time()
        if group and not self.done():  # the epoch's last, short accumulation group still counts
            for k, v in self._optimizer_step(group).items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        return sums, n, rows, waited

    def fit_to_data(self) -> None:
        """The family's fit after training (``GenerativeModel.fits_data``) over this worker's shard, summed over
        the workers, so every worker holds the same fitted state."""
        if not self.model.fits_data:
            return
        distributed = self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
        batches = ({k: v.to(self.device) for k, v in self.model.make_batch(c).items()} for c in self.batches("train"))
        fit_to_data(self.model, batches, self.autocast, torch.distributed.all_reduce if distributed else None)

    def _optimizer_step(self, group: list[dict]) -> dict[str, float]:
        self.step += 1
        return optimizer_step(self.model, self.ddp, self.optimizers, self.schedulers, group, self.cfg.grad_clip, self.autocast)

    def end_epoch(self, epoch: int, sums: dict[str, float], n: int, rows: int, waited: float, seconds: float,
                  replayed: bool) -> None:
        """The epoch's metrics row (with validation), its samples, and a checkpoint when one is due."""
        cfg = self.cfg
        row = {"scope": "epoch", "epoch": epoch + 1, "step": self.step, "seconds": seconds, "lr_factor": self.lr_factor(),
               "samples_per_second": rows * self.world / max(seconds, 1e-9), "data_wait_share": waited / max(seconds, 1e-9),
               "data_replayed": float(replayed),
               **{k: v / max(n, 1) for k, v in sums.items()},
               **_validate(self.model, self.batches("val") if cfg.validate else None, cfg, self.device, self.autocast)}
        self.history.append(row)
        final = self.done() or epoch + 1 == cfg.epochs
        if final:  # fitted before the final checkpoint and the last epoch's samples, which show what it makes
            self.fit_to_data()
        if self.rank == 0 and cfg.epoch_samples:
            samples = _epoch_samples(self.model)
            self.progress.append({"epoch": epoch + 1, "step": self.step, **(
                {"images": torch.from_numpy(samples)} if isinstance(samples, np.ndarray) else {"texts": samples})})
        if self.rank == 0:
            print(f"[{cfg.name}] epoch {epoch + 1}/{cfg.epochs} step {self.step} "
                  + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("scope", "epoch", "step")), flush=True)
        if final or (epoch + 1) % cfg.checkpoint_every == 0:
            self.save(row, epoch + 1, 0)
        else:
            ray.train.report(row)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point on every worker: ``config`` is a ``LoopConfig`` as a dict."""
    worker = _Worker(LoopConfig(**config))
    started = time.time()
    for epoch in range(worker.epoch0, worker.cfg.epochs):
        if worker.done():
            break
        t0, replayed = time.time(), "train" in worker.kept
        sums, n, rows, waited = worker.run_epoch(epoch)
        worker.end_epoch(epoch, sums, n, rows, waited, time.time() - t0, replayed)
    if worker.rank == 0:
        print(f"[{worker.cfg.name}] finished {worker.step} steps in {time.time() - started:.1f}s", flush=True)
