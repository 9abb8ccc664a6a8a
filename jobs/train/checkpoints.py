"""What a training checkpoint holds and how a worker writes and restores it: safetensors and JSON only.

A checkpoint directory holds ``model.safetensors`` (the unwrapped module), ``train_state.safetensors`` (optimiser
and schedule states, every worker's RNG states, the position: completed epochs + batches into the next, the
optimiser step, where it resumed from and where the workers ran), ``metrics.parquet`` (the history so far) and
``progress.safetensors`` (the fixed-seed samples after each epoch). Nothing is ever unpickled.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch

import aigc_models
from jobs.runtime import faults


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (what ``aigc_models.save_state`` stores)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(x) for x in internal), gauss_next))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_gather(obj: Any, world: int) -> list:
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def worker_info(rank: int, device: torch.device) -> dict[str, Any]:
    """Where a worker ran: the model card lists every worker, so a run's placement is on record."""
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "pid": os.getpid(), "device": str(device), "torch_threads": torch.get_num_threads()}


def write(d: str, model: Any, state: dict[str, Any], history: list[dict], progress: list[dict]) -> None:
    """Writes a checkpoint directory (rank 0 only)."""
    aigc_models.save(model, os.path.join(d, "model.safetensors"))
    aigc_models.save_state(state, os.path.join(d, "train_state.safetensors"))
    pd.DataFrame(history).to_parquet(os.path.join(d, "metrics.parquet"))
    aigc_models.save_state(progress, os.path.join(d, "progress.safetensors"))


def read(d: str) -> tuple[aigc_models.GenerativeModel, dict[str, Any], pd.DataFrame, list[dict]]:
    """(model, training state, metrics, per-epoch samples) of a checkpoint directory."""
    progress = os.path.join(d, "progress.safetensors")
    return (aigc_models.load(os.path.join(d, "model.safetensors")),
            aigc_models.load_state(os.path.join(d, "train_state.safetensors")),
            pd.read_parquet(os.path.join(d, "metrics.parquet")),
            aigc_models.load_state(progress) if os.path.exists(progress) else [])


def _await_report_consumed() -> None:
    """Outwaits two polls of Ray Train's controller (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default), so the
    checkpoint just reported is registered and a death now loses nothing already reported."""
    time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")) + 1)


def after_checkpoint(plan: faults.Plan | None, name: str, rank: int, world: int, step: int) -> None:
    """The faults that strike once a checkpoint is registered (``jobs.runtime.faults``): ``train-driver-kill``
    (rank 0 SIGKILLs the driver) and ``train-worker-kill`` (the last worker SIGKILLs itself), each once."""
    if rank == 0 and faults.fire(plan, "train-driver-kill", step):
        _await_report_consumed()
        print(f"[{name}] injected fault: worker 0 kills the driver (pid {faults.driver_pid(plan)}) after step {step}", flush=True)
        os.kill(faults.driver_pid(plan), signal.SIGKILL)
        time.sleep(60)  # this worker dies with the driver's job
    if rank == world - 1 and faults.fire(plan, "train-worker-kill", step):
        _await_report_consumed()
        print(f"[{name}] injected fault: worker {rank} (pid {os.getpid()}) kills itself after step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def after_step(plan: faults.Plan | None, name: str, rank: int, step: int) -> None:
    """The worker failures the reliability suite injects after optimiser step ``at``: one worker raises (a Python
    error Ray Train sees) or exits hard (``os._exit``: no cleanup, like a crash), once."""
    if faults.fire(plan, "train-raise", step):
        raise RuntimeError(f"injected fault: worker {rank} raises after step {step}")
    if faults.fire(plan, "train-exit", step):
        print(f"[{name}] injected fault: worker {rank} (pid {os.getpid()}) exits hard after step {step}", flush=True)
        os._exit(1)
