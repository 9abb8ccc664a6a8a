"""The worker side of training: one loop for every model family, run by each Ray Train worker.

Per optimiser step: ``grad_accum`` batches are gathered and ``aigc_models.training.optimizer_step`` runs
every phase of the model over them (GANs have two; DDP synchronises on the last batch only). Every
``log_every`` steps a metrics row (scope "step"); after every epoch the loss on the validation shard,
averaged over all workers (scope "epoch"). Checkpoints (every ``checkpoint_every`` epochs and, optionally,
every ``checkpoint_every_steps`` steps) hold the weights (safetensors), optimiser and schedule states, every
worker's RNG states, the position (epochs done + batches into the next), the metrics so far and where the
workers ran. A restarted worker group (a worker died) or a resumed run continues from the latest one,
skipping the batches the interrupted epoch had consumed, and records that it resumed.
"""

from __future__ import annotations

import os
import random
import signal
import socket
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
from aigc_models.training import make_optimizers, optimizer_step

from . import faults


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (what ``aigc_models.save_state`` stores)."""
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


def _all_gather(obj: Any, world: int) -> list:
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def _worker_info(rank: int, device: torch.device) -> dict[str, Any]:
    """Where a worker ran: the model card lists every worker, so a run's placement is on record."""
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "pid": os.getpid(), "device": str(device), "torch_threads": torch.get_num_threads()}


def _await_report_consumed() -> None:
    """Until Ray Train's controller took this worker's last report (it polls every ~2 s): its checkpoint is
    then registered, so a death now loses nothing already reported."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        queue, deadline = get_train_context().get_result_queue(), time.time() + 60
        while not queue.empty() and time.time() < deadline:
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - Ray internals moved: fall back to outwaiting two polls
        time.sleep(5)
    time.sleep(1.0)


def _kill_drill(cfg: dict, rank: int, world: int, step: int, resumed: bool) -> None:
    """``AIGC_TRAIN_KILL_AFTER_STEP=S`` (read by the driver): the last worker SIGKILLs its own process once the
    first checkpoint at or after step S has reached Ray Train's controller; a real worker death, to rehearse
    recovery (``max_failures``) or an interrupted run. Never fires in a run that already resumed.
    ``AIGC_FAULT=train-driver-kill:1:S`` (``jobs.faults``): rank 0 SIGKILLs the driver instead, once."""
    if rank == 0 and cfg.get("driver_pid") and faults.fire(cfg.get("faults"), "train-driver-kill", step):
        _await_report_consumed()
        print(f"[{cfg['name']}] injected fault: worker 0 kills the driver (pid {cfg['driver_pid']}) after step {step}", flush=True)
        os.kill(cfg["driver_pid"], signal.SIGKILL)
        time.sleep(60)  # this worker dies with the driver's job
    if cfg.get("kill_after_step") is None or step < cfg["kill_after_step"] or resumed or rank != world - 1:
        return
    _await_report_consumed()
    print(f"[{cfg['name']}] kill drill: worker {rank} (pid {os.getpid()}) kills itself after step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _injected_failure(cfg: dict, rank: int, step: int) -> None:
    """The reliability suite's worker failures (``jobs.faults``): after optimiser step ``at`` one worker
    raises (a Python error Ray Train sees) or exits hard (``os._exit``: no cleanup, like a crash), once."""
    if faults.fire(cfg.get("faults"), "train-raise", step):
        raise RuntimeError(f"injected fault: worker {rank} raises after step {step}")
    if faults.fire(cfg.get("faults"), "train-exit", step):
        print(f"[{cfg['name']}] injected fault: worker {rank} (pid {os.getpid()}) exits hard after step {step}", flush=True)
        os._exit(1)


def _epoch_samples(model: Any) -> Any:
    """Fixed-seed samples after an epoch (one image per class, up to 10, or two texts), so the registry can
    show how the samples changed epoch by epoch. The training RNG streams are left untouched."""
    cuda = [p.device.index or 0 for p in model.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=cuda):
        if model.modality == "image":
            classes = list(getattr(model.config, "classes", None) or [None])[:10]
            return np.stack(model.sample(classes, seeds=list(range(len(classes)))))
        return model.sample(["The ", "A "], seeds=[0, 1], max_new_tokens=48)


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg["seed"] * 1000 + rank)
    device = ray.train.torch.get_device()
    model = aigc_models.build(cfg["family"], cfg["model_config"])
    optimizers, schedulers = make_optimizers(model, cfg["total_steps"], cfg["warmup_steps"], cfg["lr_schedule"],
                                             cfg["min_lr_ratio"])

    epoch0, skip, step, history, resumed_from, progress = 0, 0, 0, [], None, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker group, or a resumed run: continue where the checkpoint left off
        with checkpoint.as_directory() as d:
            model.load_state_dict(aigc_models.load(os.path.join(d, "model.safetensors")).state_dict())
            state = aigc_models.load_state(os.path.join(d, "train_state.safetensors"))
            for phase in model.phases:
                optimizers[phase].load_state_dict(state["optimizers"][phase])
                schedulers[phase].load_state_dict(state["schedulers"][phase])
            if rank < len(state["rng"]):
                _set_rng_state(state["rng"][rank])
            epoch0, skip, step = state["epoch"], state.get("batch", 0), state["step"]
            resumed_from = {"step": step, "epoch": epoch0, "batch": skip, "previous": state.get("resumed_from")}
            history = pd.read_parquet(os.path.join(d, "metrics.parquet")).to_dict("records")
            if os.path.exists(os.path.join(d, "progress.safetensors")):
                progress = aigc_models.load_state(os.path.join(d, "progress.safetensors"))

    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": len(model.phases) > 1})
    workers = _all_gather(_worker_info(rank, device), world)
    autocast = {"device_type": device.type, "dtype": torch.bfloat16,
                "enabled": device.type == "cuda" and cfg["precision"] != "fp32"}
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if cfg["validate"] else None
    lr_now = lambda: schedulers[model.phases[0]].get_last_lr()[0] / optimizers[model.phases[0]].defaults["lr"]  # noqa: E731

    def save(row: dict, epoch_done: int, batch: int) -> None:
        """Report ``row`` with a checkpoint (weights, optimiser, schedule and every worker's RNG states, the
        position: completed epochs + batches into the next, metrics so far, where the workers ran)."""
        rng = _all_gather(_rng_state(), world)  # every worker's, so a restart draws what it would have
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                aigc_models.save(model, os.path.join(d, "model.safetensors"))
                aigc_models.save_state({"optimizers": {p: o.state_dict() for p, o in optimizers.items()},
                                        "schedulers": {p: s.state_dict() for p, s in schedulers.items()}, "rng": rng,
                                        "epoch": epoch_done, "batch": batch, "step": step, "resumed_from": resumed_from,
                                        "workers": workers}, os.path.join(d, "train_state.safetensors"))
                pd.DataFrame(history).to_parquet(os.path.join(d, "metrics.parquet"))
                aigc_models.save_state(progress, os.path.join(d, "progress.safetensors"))
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
        _kill_drill(cfg, rank, world, step, resumed_from is not None)

    started, done = time.time(), bool(cfg["max_steps"] and step >= cfg["max_steps"])
    for epoch in range(epoch0, cfg["epochs"]):
        if done:
            break
        t0, rows, sums, n, waited, group = time.time(), 0, {}, 0, 0.0, []
        window: dict[str, float] = {}
        t_window, rows_window, n_window = time.time(), 0, 0
        skip_now, skip = skip, 0  # batches of this epoch a mid-epoch checkpoint had already consumed
        t_wait = time.time()
        batches = shard.iter_batches(batch_size=cfg["batch_size"], batch_format="numpy", prefetch_batches=2)
        for i, columns in enumerate(batches):
            if i < skip_now:
                t_wait = time.time()
                continue
            waited += time.time() - t_wait
            group.append({k: v.to(device, non_blocking=True) for k, v in model.make_batch(columns).items()})
            batch_rows = len(next(iter(columns.values())))
            rows, rows_window = rows + batch_rows, rows_window + batch_rows
            if len(group) == cfg["grad_accum"]:
                metrics = optimizer_step(model, ddp, optimizers, schedulers, group, cfg["grad_clip"], autocast)
                group, step, n, n_window = [], step + 1, n + 1, n_window + 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                    window[k] = window.get(k, 0.0) + v
                if cfg["log_every"] and step % cfg["log_every"] == 0:  # per-step row: the window's means
                    seconds = time.time() - t_window
                    history.append({"scope": "step", "epoch": epoch + 1, "step": step, "seconds": seconds, "lr_factor": lr_now(),
                                    "samples_per_second": rows_window * world / max(seconds, 1e-9),
                                    **{k: v / n_window for k, v in window.items()}})
                    window, t_window, rows_window, n_window = {}, time.time(), 0, 0
                _injected_failure(cfg, rank, step)
                if cfg["max_steps"] and step >= cfg["max_steps"]:
                    done = True
                    break
                if cfg["checkpoint_every_steps"] and step % cfg["checkpoint_every_steps"] == 0:
                    save({"epoch": epoch + 1, "step": step}, epoch, i + 1)
            t_wait = time.time()
        if group:  # the epoch's last, short accumulation group still counts
            metrics = optimizer_step(model, ddp, optimizers, schedulers, group, cfg["grad_clip"], autocast)
            step, n = step + 1, n + 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        seconds = time.time() - t0
        row = {"scope": "epoch", "epoch": epoch + 1, "step": step, "seconds": seconds, "lr_factor": lr_now(),
               "samples_per_second": rows * world / max(seconds, 1e-9),
               "data_wait_share": waited / max(seconds, 1e-9), **{k: v / max(n, 1) for k, v in sums.items()},
               **_validate(model, val_shard, cfg, device, autocast)}
        history.append(row)
        if rank == 0 and cfg["epoch_samples"]:
            samples = _epoch_samples(model)
            progress.append({"epoch": epoch + 1, "step": step,
                             **({"images": torch.from_numpy(samples)} if isinstance(samples, np.ndarray) else {"texts": samples})})
        last = done or epoch + 1 == cfg["epochs"]
        if rank == 0:
            print(f"[{cfg['name']}] epoch {epoch + 1}/{cfg['epochs']} step {step} "
                  + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("scope", "epoch", "step")), flush=True)
        if last or (epoch + 1) % cfg["checkpoint_every"] == 0:
            save(row, epoch + 1, 0)
        else:
            ray.train.report(row)
    if rank == 0:
        print(f"[{cfg['name']}] finished {step} steps in {time.time() - started:.1f}s", flush=True)
