"""Training on Ray Train: one generic loop for every model family, DDP across workers.

The driver (``run_training``) checks everything it can before a worker starts (rows to train on, what the data
decides and what a pretrained model fixes: ``jobs.train.data``; GPUs and placement: ``jobs.runtime.capacity``),
starts a ``TorchTrainer`` whose workers run ``jobs.train.loop``, and registers the finished run as a model version
(``jobs.train.register``). An interrupted run of the same config and data resumes from its latest checkpoint. A
pretrained model with ``finetune: false`` skips Ray Train: its weights are registered as they are, with the same
card, samples and quality references as a trained version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Iterator

import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import aigc_models
from jobs.data.curated import resolve_dataset_version
from jobs.runtime import capacity, faults, progress
from jobs.store import registry
from jobs.store.storage import Store
from jobs.train import checkpoints
from jobs.train.data import check_data_fits_model, data_config, model_config, small_split, split_stats, worker_dataset
from jobs.train.loop import LoopConfig, train_loop_per_worker
from jobs.train.policy import promotes_at_once
from jobs.train.register import Trained, register_version, start_references
from jobs.train.spec import ModelSpec, TrainSpec


@dataclasses.dataclass
class TrainResult:
    model: registry.ModelRef
    steps: int
    epochs: int
    seconds: float
    samples_per_second: float
    final_metrics: dict[str, float]
    promoted: bool = False  # production.json now points at this version
    used_as_is: bool = False  # a pretrained model registered without training (finetune: false)


def run_training(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str | None = None,
                 fresh: bool = False, promote: str | None = None) -> TrainResult:
    """Trains ``spec`` on Ray Train and registers it. Everything that can be checked on the driver is checked
    before a worker starts; an interrupted run of the same config resumes unless ``fresh``. ``promote`` overrides
    ``train.promote`` ("first", "always", "never")."""
    started = time.time()
    dataset_version = resolve_dataset_version(store, dataset_version)
    n_rows, classes = split_stats(store, dataset_version, "train", spec.modality, spec.sources)
    if n_rows == 0:
        raise ValueError(f"model {spec.name}: curated dataset {dataset_version} has no {spec.modality} rows to train on"
                         + (f" from sources {spec.sources}" if spec.sources else ""))
    config = model_config(spec, store, dataset_version, classes)
    probe = aigc_models.build(spec.family, config)  # fails here, before any worker starts, on a bad config
    check_data_fits_model(spec, probe, store, dataset_version, classes)
    gpus = ray.cluster_resources().get("GPU", 0)
    needed = train.num_workers if spec.finetune else 1  # used as is: one GPU task builds the quality references
    if train.use_gpu and gpus < needed and not capacity.autoscaling():
        raise ValueError(f"train.use_gpu is true with {needed} worker{'s' * (needed != 1)}, but the Ray cluster "
                         f"has {gpus:g} GPUs")
    policy = promote or train.promote
    # the references need the data alone: built while the workers train when the cluster holds both at once
    early = not spec.finetune or _references_fit_beside_workers(train)
    references = start_references(spec, train, store, dataset_version, probe) if early else None
    if not spec.finetune:
        probe.eval()
        trained = Trained(probe, dataset_version, n_rows, 0.0, {"step": 0, "epoch": 0})
        promoted = promotes_at_once(store, spec.name, policy)
        ref = register_version(store, spec, train, trained, promoted, references, started=started)
        progress.say(f"[{spec.name}] registered {ref.version}: the pretrained weights as they are (finetune: false)")
        return TrainResult(ref, 0, 0, ref.card.wall_seconds, 0.0, {}, promoted, used_as_is=True)
    loop = _loop_config(spec, train, store, dataset_version, config, n_rows)
    try:
        trained = _fit(spec, train, store, dataset_version, loop, fresh)
    except BaseException:
        if references:
            references.cancel()
        raise
    references = references or start_references(spec, train, store, dataset_version, trained.model)
    trained = dataclasses.replace(trained, train_rows=n_rows, seconds=time.time() - started)
    promoted = promotes_at_once(store, spec.name, policy)  # decided now: another run may have promoted meanwhile
    ref = register_version(store, spec, train, trained, promoted, references)
    store.delete("checkpoints", spec.name, "_active.json")  # registered: the next `aigc train` starts a new run
    if not train.keep_finished_checkpoints:
        store.delete("checkpoints", spec.name, trained.run_name)
    return TrainResult(ref, int(trained.state["step"]), int(trained.state["epoch"]), trained.seconds,
                       float(trained.metrics.loc[trained.metrics["scope"] == "epoch", "samples_per_second"].mean()),
                       trained.final_metrics, promoted)


def _loop_config(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str, config: dict,
                 n_rows: int) -> LoopConfig:
    epochs, batch_size = spec.epochs or train.epochs, spec.batch_size or train.batch_size
    per_epoch = math.ceil(math.ceil(n_rows // train.num_workers / batch_size) / train.grad_accum)
    n_val = split_stats(store, dataset_version, "val", spec.modality, spec.sources)[0] if train.validation else 0
    return LoopConfig(
        name=spec.name, family=spec.family, model_config=config, seed=spec.seed, epochs=epochs, max_steps=spec.max_steps,
        batch_size=batch_size, total_steps=min(epochs * max(1, per_epoch), spec.max_steps or 10**12),
        checkpoint_every=train.checkpoint_every, checkpoint_every_steps=train.checkpoint_every_steps,
        log_every=train.log_every, grad_clip=train.grad_clip, grad_accum=train.grad_accum, precision=train.precision,
        warmup_steps=train.warmup_steps, lr_schedule=train.lr_schedule, min_lr_ratio=train.min_lr_ratio,
        validate=bool(n_val), epoch_samples=train.epoch_samples, faults=faults.plan(), keep_batches=(
            train.cache_dataset and train.deterministic_data
            and all(small_split(store, dataset_version, s) for s in (("train", "val") if n_val else ("train",)))))


def _fit(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str, loop: LoopConfig, fresh: bool) -> Trained:
    """Runs (or resumes) the Ray Train run and reads its last checkpoint back."""
    fingerprint = hashlib.sha256(json.dumps([loop.fingerprint_fields(), dataset_version], sort_keys=True,
                                            default=str).encode()).hexdigest()
    run_name, _ = _run_name(store, spec, fingerprint, fresh)
    resources = _worker_resources(train)
    capacity.check([worker_demand(train)], f"training {spec.name}")  # Ray Train would wait for ever
    splits = ("train", "val") if loop.validate else ("train",)
    # The controller sees that the workers finished at its next health check (every 2 s by Ray's default): 0.5 s
    # ended a fit 2.0 s sooner here (3.7 s -> 1.7 s from the last step to fit() returning). Ray Train hands the
    # value to its controller; one set in the environment wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=dataclasses.asdict(loop),
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources,
                                     placement_strategy=train.placement_strategy),
        run_config=RunConfig(name=run_name, storage_path=store.path("checkpoints", spec.name), storage_filesystem=store.fs,
                             failure_config=FailureConfig(max_failures=train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints)),
        datasets={s: worker_dataset(store, dataset_version, s, spec, train.cache_dataset) for s in splits},
        dataset_config=data_config(train.deterministic_data))
    with _no_data_progress_bars(), progress.watch(f"train {spec.name}", loop.total_steps, "steps",
                                                  lambda: _steps_done(store, spec.name, run_name), every=5.0):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training of {spec.name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        model, state, metrics, epoch_samples = checkpoints.read(d)
    return Trained(model, dataset_version, 0, 0.0, state, metrics, epoch_samples, run_name)


_bars_lock = threading.Lock()
_bars_off: list = [0, True]  # fits running now, and the setting before the first of them


@contextlib.contextmanager
def _no_data_progress_bars() -> Iterator[None]:
    """Ray Data's progress bars off while fits run (the shards' bars are noise), back as they were after the last
    one: the nightly flow may run several fits at once, and the setting is the process's."""
    context = ray.data.DataContext.get_current()
    with _bars_lock:
        if _bars_off[0] == 0:
            _bars_off[1], context.enable_progress_bars = context.enable_progress_bars, False
        _bars_off[0] += 1
    try:
        yield
    finally:
        with _bars_lock:
            _bars_off[0] -= 1
            if _bars_off[0] == 0:
                context.enable_progress_bars = _bars_off[1]


def _run_name(store: Store, spec: ModelSpec, fingerprint: str, fresh: bool) -> tuple[str, bool]:
    """The Ray Train run to use: an interrupted run of the same config and data is resumed (Ray Train restores a
    run from its name and storage path), unless ``fresh``. ``checkpoints/<name>/_active.json`` records the run in
    progress until it is registered."""
    active = store.read_json("checkpoints", spec.name, "_active.json") if store.exists("checkpoints", spec.name, "_active.json") else None
    if active and not fresh and active["fingerprint"] == fingerprint:
        progress.say(f"[{spec.name}] resuming the interrupted run {active['run_name']} from its latest checkpoint "
                     "(--fresh starts over)")
        return active["run_name"], True
    if active and not fresh:
        progress.say(f"[{spec.name}] the interrupted run {active['run_name']} had another config or dataset; starting a new run")
    # unique even within a second: Ray Train restores a run from its name, so a name reused by --fresh would resume
    run_name = f"{spec.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{fingerprint[:8]}-{uuid.uuid4().hex[:6]}"
    store.write_json({"run_name": run_name, "fingerprint": fingerprint, "started_at": datetime.now(timezone.utc).isoformat()},
                     "checkpoints", spec.name, "_active.json")
    return run_name, False


def _worker_resources(train: TrainSpec) -> dict[str, float]:
    return train.resources_per_worker or ({"CPU": 1, "GPU": 1} if train.use_gpu else {"CPU": 1})


def _references_fit_beside_workers(train: TrainSpec) -> bool:
    """Whether the references task can run beside the whole worker group. When it cannot (every GPU a worker's,
    say) it waits until training ends rather than hold what the workers wait for."""
    task = {"CPU": 1, "GPU": 1} if train.use_gpu else {"CPU": 1}
    return not capacity.autoscaling() and capacity.fits(
        [worker_demand(train), capacity.Demand("quality references", "train", task)])


def worker_demand(train: TrainSpec) -> capacity.Demand:
    """The worker group as Ray must place it: STRICT_PACK on one node, STRICT_SPREAD one per node (a new ``Demand``
    each call: several models' groups are packed together by ``capacity.fits``)."""
    resources = _worker_resources(train)
    if train.placement_strategy == "STRICT_PACK":
        return capacity.Demand(f"group of {train.num_workers} training workers (STRICT_PACK: one node)", "train.num_workers",
                               {k: v * train.num_workers for k, v in resources.items()})
    return capacity.Demand("training worker", "train.num_workers", resources, train.num_workers,
                           spread=train.placement_strategy == "STRICT_SPREAD")


def _steps_done(store: Store, name: str, run_name: str) -> int:
    """Optimiser steps of the run's latest checkpoint (its ``metrics.parquet``): training's progress as the driver
    can see it while the workers run."""
    folder = f"checkpoints/{name}/{run_name}"
    done = [c for c in store.listdir(folder) if c.startswith("checkpoint_") and store.exists(folder, c, "metrics.parquet")]
    if not done:
        return 0
    steps = pq.read_table(store.path(folder, max(done), "metrics.parquet"), columns=["step"], filesystem=store.fs)
    return int(pc.max(steps.column("step")).as_py() or 0)
