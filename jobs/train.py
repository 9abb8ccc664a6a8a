"""Training on Ray Train: one generic loop for every model family, DDP across workers.

The driver (``run_training``) reads the curated split through Ray Data, derives what the data decides
(image size, channels, classes; a pretrained model decides them itself and the data must fit it), and
starts a ``TorchTrainer``. Each worker runs ``train_loop_per_worker``:
it builds the model from its config, wraps it with Ray Train's ``prepare_model`` (DDP), streams its shard
of the dataset, steps one optimiser per model phase, and reports checkpoints (weights as safetensors,
optimiser states, metrics so far). The finished run is published to the model registry. A pretrained model
with ``finetune: false`` skips Ray Train: its weights are registered as they are, with the same card,
samples and quality references as a trained version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import aigc_models
from aigc_models.text import train_bpe

from . import capacity, faults, layout, progress, quality, registry
from .images import decode_png, grid, line_chart
from .preprocess import label_key, resolve_dataset_version
from .specs import ModelSpec, TrainSpec
from .train_loop import train_loop_per_worker
from .storage import Store

DATA_DERIVED = ("resolution", "channels", "classes")  # config fields the curated data decides


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


# ---- data ------------------------------------------------------------------------------------------

def _training_columns(batch: pd.DataFrame, modality: str) -> dict[str, np.ndarray]:
    """Curated rows -> the numpy columns ``GenerativeModel.make_batch`` takes."""
    if modality == "image":
        pixels = np.stack([decode_png(img["bytes"]) for img in batch["image"]])  # [B, H, W, C]
        return {"pixels": pixels, "label": batch["label"].fillna("").astype(str).to_numpy()}
    return {"text": batch["text"].astype(str).to_numpy()}


def training_dataset(store: Store, dataset_version: str, split: str, modality: str, sources: list[str] | None) -> ray.data.Dataset:
    ds = ray.data.read_parquet(store.path("curated", dataset_version, split), filesystem=store.fs,
                               columns=["source", "modality", "label", "image", "text"])
    wanted = set(sources) if sources else None

    def keep(df: pd.DataFrame) -> pd.DataFrame:
        mask = df["modality"] == modality
        if wanted is not None:
            mask &= df["source"].isin(wanted)
        return df[mask]

    return (ds.map_batches(keep, batch_format="pandas")
              .map_batches(_training_columns, fn_kwargs={"modality": modality}, batch_format="pandas"))


# A split this small (Parquet bytes) is read and decoded on the driver into Ray's object store: a Ray Data
# job costs seconds of start-up, many times what decoding a few thousand small images takes.
DRIVER_DECODE_MAX_BYTES = 16 * 2**20


def _split_dataset(store: Store, dataset_version: str, split: str, spec: ModelSpec, cache: bool) -> ray.data.Dataset:
    """What the workers iterate: decoded once (``cache``: on the driver for a small split, else materialised
    by Ray Data before the workers take their CPUs), or streamed from Parquet every epoch. All three hand
    the workers the same rows in the file order."""
    if not cache:
        return training_dataset(store, dataset_version, split, spec.modality, spec.sources)
    folder = store.path("curated", dataset_version, split)
    dataset = pads.dataset(folder, filesystem=store.fs, format="parquet")
    size = sum(f.size for f in store.fs.get_file_info(dataset.files))
    if size > DRIVER_DECODE_MAX_BYTES:
        return training_dataset(store, dataset_version, split, spec.modality, spec.sources).materialize()
    wanted = pads.field("modality") == spec.modality
    if spec.sources:
        wanted &= pads.field("source").isin(spec.sources)
    rows = dataset.to_table(columns=["source", "modality", "label", "image", "text"], filter=wanted).to_pandas()
    columns = _training_columns(rows, spec.modality)
    n = len(next(iter(columns.values())))
    return ray.data.from_items([{k: v[i] for k, v in columns.items()} for i in range(n)],
                               override_num_blocks=max(1, min(64, n // 256)))


# ---- the driver ----------------------------------------------------------------------------------

def _data_config(deterministic: bool) -> DataConfig:
    """How the splits reach the workers. Deterministic: Ray Data keeps block order and the splitter deals
    blocks by row count alone (no locality, no timing), so rank r gets the same rows in the same order on
    every run and after every restart."""
    options = DataConfig.default_ingest_options()
    if deterministic:
        options.preserve_order = True
    return DataConfig(execution_options=options, enable_shard_locality=not deterministic)


def split_stats(store: Store, dataset_version: str, split: str, modality: str,
                sources: list[str] | None) -> tuple[int, list[str]]:
    """Rows and distinct labels of what a model will train on, from three small columns read on the driver."""
    table = pads.dataset(store.path("curated", dataset_version, split), filesystem=store.fs, format="parquet").to_table(
        columns=["source", "modality", "label"])
    df = table.to_pandas()
    mask = df["modality"] == modality
    if sources:
        mask &= df["source"].isin(sources)
    labels = [str(l) for l in df.loc[mask, "label"].dropna().unique()]
    return int(mask.sum()), sorted(labels, key=label_key)


def model_config(spec: ModelSpec, store: Store, dataset_version: str, classes: list[str]) -> dict[str, Any]:
    """Hyperparameters from the spec plus the fields the data decides, for configs that have them. A
    pretrained family gets none: its weights fix the image shape and what each class index means (its
    ``classes`` names them), so the data is checked against the model instead (``check_data_fits_model``)."""
    cls = aigc_models.FAMILIES[spec.family].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    manifest = store.read_json(layout.manifest(layout.CURATED, dataset_version))
    derived = {} if aigc_models.FAMILIES[spec.family].pretrained else {
        "resolution": manifest["preprocess"]["resolution"], "channels": manifest["preprocess"]["channels"],
        "classes": classes}
    config = {**{k: v for k, v in derived.items() if k in fields}, **spec.hyperparameters}
    if config.get("tokenizer") == "bpe" and not config.get("tokenizer_json"):
        vocab = config.get("vocab_size", cls.vocab_size)  # type: ignore[attr-defined]
        config["tokenizer_json"] = train_bpe(_texts(store, dataset_version, spec.sources), vocab)
    return config


def _texts(store: Store, dataset_version: str, sources: list[str] | None) -> Iterator[str]:
    """The curated train split's texts, streamed batch by batch (for training a tokenizer)."""
    import pyarrow.compute as pc

    filt = pc.field("modality") == "text"
    if sources:
        filt &= pc.field("source").isin(sources)
    dataset = pads.dataset(store.path("curated", dataset_version, "train"), filesystem=store.fs, format="parquet")
    for batch in dataset.to_batches(columns=["text"], filter=filt):
        yield from (t for t in batch.column("text").to_pylist() if t)


def check_data_fits_model(spec: ModelSpec, model: aigc_models.GenerativeModel, store: Store, dataset_version: str,
                          classes: list[str]) -> None:
    """Hyperparameters a model entry pins (resolution, channels, classes), and what a pretrained model's
    weights fix (its ``output_shape`` and classes), must agree with the curated data; a mismatch is an error
    here, on the driver, naming the key to change, instead of a shape error inside every worker."""
    manifest = store.read_json(layout.manifest(layout.CURATED, dataset_version))["preprocess"]
    pinned = spec.hyperparameters
    for key in ("resolution", "channels"):
        if key in pinned and key in manifest and int(pinned[key]) != int(manifest[key]):
            raise ValueError(f"model {spec.name}: {key} {pinned[key]} does not match the curated data's {manifest[key]} "
                             f"(dataset {dataset_version}); set preprocess.{key} or drop the model's '{key}'")
    named = [str(x) for x in getattr(model.config, "classes", None) or pinned.get("classes") or []]  # pinned or weights'
    outside = [l for l in classes if l not in named]
    if named and outside:
        raise ValueError(f"model {spec.name}: the curated data has labels outside the model's classes: "
                         f"{', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''} (dataset {dataset_version}; "
                         f"the model's classes are {', '.join(named[:10])}{' ...' if len(named) > 10 else ''}: name its "
                         "class indices with the model's 'classes', or pick sources with the model's 'sources')")
    if model.modality != "image":
        return
    r, ch = manifest.get("resolution"), manifest.get("channels")
    h, w, c = model.output_shape
    if (r, r) != (h, w) or ch != c:
        key, want = ("resolution", h) if (r, r) != (h, w) else ("channels", c)
        raise ValueError(f"preprocess.{key}: the curated data (dataset {dataset_version}) has {r}x{r} images with {ch} "
                         f"channel(s), model {spec.name} ({spec.family}) takes {h}x{w} with {c}; set preprocess.{key}: "
                         f"{want} and preprocess again")


def _run_name(store: Store, spec: ModelSpec, fingerprint: str, fresh: bool) -> tuple[str, bool]:
    """The Ray Train run to use: an interrupted run of the same config and data is resumed (Ray Train restores
    a run from its name and storage path), unless ``fresh``. ``checkpoints/<name>/_active.json`` records the
    run in progress until it is published."""
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


def _worker_demand(train: TrainSpec, resources: dict[str, float]) -> capacity.Demand:
    """The worker group as Ray must place it: STRICT_PACK on one node, STRICT_SPREAD one per node."""
    if train.placement_strategy == "STRICT_PACK":
        return capacity.Demand(f"group of {train.num_workers} training workers (STRICT_PACK: one node)", "train.num_workers",
                               {k: v * train.num_workers for k, v in resources.items()})
    return capacity.Demand("training worker", "train.num_workers", resources, train.num_workers,
                           spread=train.placement_strategy == "STRICT_SPREAD")


def run_training(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str | None = None,
                 fresh: bool = False, promote: str | None = None) -> TrainResult:
    """Trains ``spec`` on Ray Train and publishes it to the registry. Everything that can be checked on the
    driver is checked before a worker starts; an interrupted run of the same config resumes unless ``fresh``.
    ``promote`` overrides ``train.promote`` ("first", "always", "never")."""
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
    if not spec.finetune:
        return _register_as_is(spec, train, store, dataset_version, probe, n_rows, started, promote)
    epochs, batch_size = spec.epochs or train.epochs, spec.batch_size or train.batch_size
    per_epoch = math.ceil(math.ceil(n_rows // train.num_workers / batch_size) / train.grad_accum)
    total_steps = min(epochs * max(1, per_epoch), spec.max_steps or 10**12)  # optimiser steps, for the LR schedule
    n_val = split_stats(store, dataset_version, "val", spec.modality, spec.sources)[0] if train.validation else 0
    loop_config = {
        "name": spec.name, "family": spec.family, "model_config": config, "seed": spec.seed,
        "epochs": epochs, "max_steps": spec.max_steps,
        "batch_size": batch_size, "checkpoint_every": train.checkpoint_every,
        "checkpoint_every_steps": train.checkpoint_every_steps, "log_every": train.log_every,
        "grad_clip": train.grad_clip, "precision": train.precision, "grad_accum": train.grad_accum,
        "warmup_steps": train.warmup_steps, "lr_schedule": train.lr_schedule, "min_lr_ratio": train.min_lr_ratio,
        "total_steps": total_steps, "validate": bool(n_val), "epoch_samples": train.epoch_samples,
    }
    fingerprint = hashlib.sha256(json.dumps([loop_config, dataset_version], sort_keys=True, default=str).encode()).hexdigest()
    run_name, _ = _run_name(store, spec, fingerprint, fresh)
    if os.environ.get("AIGC_TRAIN_KILL_AFTER_STEP"):  # a fire drill: see train_loop._kill_drill
        loop_config["kill_after_step"] = int(os.environ["AIGC_TRAIN_KILL_AFTER_STEP"])
    loop_config["faults"] = faults.plan()  # the reliability suite's injected failures (none otherwise)
    loop_config["driver_pid"] = os.getpid() if loop_config["faults"] else None
    resources = train.resources_per_worker or ({"CPU": 1, "GPU": 1} if train.use_gpu else {"CPU": 1})
    capacity.check([_worker_demand(train, resources)], f"training {spec.name}")  # Ray Train would wait for ever
    data_context = ray.data.DataContext.get_current()
    progress_bars, data_context.enable_progress_bars = data_context.enable_progress_bars, False  # per-epoch bars of the shards are noise
    datasets = {split: _split_dataset(store, dataset_version, split, spec, train.cache_dataset)
                for split in (("train", "val") if n_val else ("train",))}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources,
                                     placement_strategy=train.placement_strategy),
        run_config=RunConfig(name=run_name, storage_path=store.path("checkpoints", spec.name), storage_filesystem=store.fs,
                             failure_config=FailureConfig(max_failures=train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints)),
        datasets=datasets,
        dataset_config=_data_config(train.deterministic_data),
    )
    try:
        with progress.watch(f"train {spec.name}", total_steps, "steps", lambda: _steps_done(store, spec.name, run_name), every=5.0):
            result = trainer.fit()
    finally:
        data_context.enable_progress_bars = progress_bars
    if result.checkpoint is None:
        raise RuntimeError(f"training of {spec.name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        model = aigc_models.load(os.path.join(d, "model.safetensors"))
        metrics = pd.read_parquet(os.path.join(d, "metrics.parquet"))
        state = aigc_models.load_state(os.path.join(d, "train_state.safetensors"))
        epoch_samples = aigc_models.load_state(os.path.join(d, "progress.safetensors")) if os.path.exists(os.path.join(d, "progress.safetensors")) else []
    seconds = time.time() - started
    epoch_rows = metrics[metrics["scope"] == "epoch"] if "scope" in metrics else metrics
    final = {k: float(v) for k, v in epoch_rows.iloc[-1].items() if k not in ("scope", "epoch", "step", "seconds")}
    references = _quality_references(spec, train, store, dataset_version, model)
    promote = _promotes(store, spec, train, promote)
    ref = _publish_model(store, spec, train, model, metrics, dataset_version, run_name, state, seconds, n_rows, final,
                         probe.num_parameters(), promote, epoch_samples, references)
    store.delete("checkpoints", spec.name, "_active.json")  # published: the next `aigc train` starts a new run
    if not train.keep_finished_checkpoints:
        store.delete("checkpoints", spec.name, run_name)
    return TrainResult(ref, int(state["step"]), int(state["epoch"]), seconds,
                       float(epoch_rows["samples_per_second"].mean()), final, promote)


def _promotes(store: Store, spec: ModelSpec, train: TrainSpec, promote: str | None) -> bool:
    """Whether a new version becomes production at once (the nightly gate passes "never" and promotes after
    evaluation)."""
    policy = promote or train.promote
    return policy == "always" or (policy == "first" and not store.exists("models", spec.name, "production.json"))


def _register_as_is(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str,
                    model: aigc_models.GenerativeModel, n_rows: int, started: float, promote: str | None) -> TrainResult:
    """``finetune: false``: a pretrained model's weights become a version as they are. Nothing is trained, but
    the version is registered like a trained one (weights in our checkpoint format, a card with its output
    shape, samples, quality references from the curated data), so evaluation, promotion, generation and
    ``aigc regenerate`` treat both alike. Zero steps and no metrics file say that it was not trained."""
    model.eval()
    references = _quality_references(spec, train, store, dataset_version, model)
    promoted = _promotes(store, spec, train, promote)
    seconds = time.time() - started
    ref = _publish_model(store, spec, train, model, None, dataset_version, None, {"step": 0, "epoch": 0}, seconds,
                         n_rows, {}, model.num_parameters(), promoted, [], references)
    progress.say(f"[{spec.name}] registered {ref.version}: the pretrained weights as they are (finetune: false)")
    return TrainResult(ref, 0, 0, seconds, 0.0, {}, promoted, used_as_is=True)


def _steps_done(store: Store, name: str, run_name: str) -> int:
    """Optimiser steps of the run's latest checkpoint (its ``metrics.parquet``): training's progress as the
    driver can see it while the workers run."""
    folder = f"checkpoints/{name}/{run_name}"
    done = [c for c in store.listdir(folder) if c.startswith("checkpoint_") and store.exists(folder, c, "metrics.parquet")]
    if not done:
        return 0
    latest = max(done)
    steps = pq.read_table(store.path(folder, latest, "metrics.parquet"), columns=["step"], filesystem=store.fs)
    return int(pc.max(steps.column("step")).as_py() or 0)


# TrainSpec fields that change the weights a run produces (the rest is bookkeeping, placement or logging).
SHAPING_TRAIN_FIELDS = ("num_workers", "epochs", "batch_size", "grad_clip", "grad_accum", "lr_schedule", "warmup_steps",
                        "min_lr_ratio", "precision")


def spec_fingerprint(spec: ModelSpec, train: TrainSpec) -> str:
    """What the model entry and the train section ask for, as a hash: recorded in the card, so the nightly
    flow can tell that production was trained with another config."""
    shaping = {k: getattr(train, k) for k in SHAPING_TRAIN_FIELDS}
    entry = spec.model_dump(mode="json")
    if entry.get("finetune") is True:  # the default: left out, so versions trained before the key existed still match
        del entry["finetune"]
    return hashlib.sha256(json.dumps([entry, shaping], sort_keys=True).encode()).hexdigest()[:16]


def retrain_reason(store: Store, spec: ModelSpec, train: TrainSpec, dataset_version: str, run_date: str) -> str | None:
    """Why tonight should train ``spec`` (``None``: production is up to date and is reused)."""
    if not store.exists("models", spec.name, "production.json"):
        return "no production version yet"
    card = registry.resolve(store, spec.name).card
    policy = train.retrain
    if policy.on_data_change and card["dataset_version"] != dataset_version:
        return f"dataset changed ({card['dataset_version']} -> {dataset_version})"
    if policy.on_config_change and card.get("spec_fingerprint") != spec_fingerprint(spec, train):
        return "model or train config changed since production was trained"
    if policy.every_days:
        trained = datetime.fromisoformat(card["created_at"]).date()
        age = (datetime.fromisoformat(run_date).date() - trained).days
        if age >= policy.every_days:
            return f"cadence: production is {age} days old (train.retrain.every_days={policy.every_days})"
    return None


def _publish_model(store: Store, spec: ModelSpec, train: TrainSpec, model: aigc_models.GenerativeModel,
                   metrics: pd.DataFrame | None, dataset_version: str, run_name: str | None, state: dict, seconds: float,
                   n_rows: int, final: dict[str, float], n_params: int, promote: bool,
                   progress: list[dict], references: tuple[dict[str, bytes], dict[str, Any]] | None) -> registry.ModelRef:
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "model.safetensors")
        sha = aigc_models.save(model, weights, extra={"model_name": spec.name, "dataset_version": dataset_version})
        files = {"model.safetensors": open(weights, "rb").read()}
    version = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{sha[:8]}"
    if metrics is not None:  # None: used as is, nothing was trained
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), buf)
        files["metrics.parquet"] = buf.getvalue()
        files["loss_curve.png"] = _loss_curve(metrics, spec.name)
    files.update(_samples(model, train.sample_grid))
    files.update(_samples_by_epoch(progress))
    if references:
        files.update(references[0])
    card = {
        "name": spec.name, "version": version, "family": model.family, "modality": model.modality,
        "config": dataclasses.asdict(model.config), "parameters": n_params,
        "dataset_version": dataset_version, "train_rows": n_rows,
        "steps": int(state["step"]), "epochs": int(state["epoch"]), "wall_seconds": round(seconds, 2),
        "samples_per_second": None if metrics is None else
        round(float(metrics.loc[metrics["scope"] == "epoch", "samples_per_second"].mean()), 2),
        "final_metrics": final, "checkpoint_sha256": sha, "ray_train_run": run_name,
        "num_workers": train.num_workers, "use_gpu": train.use_gpu, "sampler_defaults": model.sampler_defaults(),
        "code_version": _code_version(), "created_at": datetime.now(timezone.utc).isoformat(),
        "resumed_from": state.get("resumed_from"), "workers": state.get("workers", []),
        "quality": references[1] if references else None, "spec_fingerprint": spec_fingerprint(spec, train),
        "output_shape": list(model.output_shape) if model.modality == "image" else None,  # (H, W, C): what jobs read
        "used_as_is": not spec.finetune,
    }
    return registry.register(store, spec.name, version, files, card, promote=promote)


def _quality_references(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str,
                        model: aigc_models.GenerativeModel) -> tuple[dict[str, bytes], dict[str, Any]] | None:
    """The generation filters' references (label classifier, training pixels or shingles), built in a Ray
    task on the same kind of device as training; see ``jobs.quality``."""
    if not train.quality_references:
        return None
    classes = list(getattr(model.config, "classes", None) or []) if model.modality == "image" else []
    task = quality.build_references_remote.options(num_gpus=1 if train.use_gpu else 0)
    started = time.time()
    try:
        files, card = ray.get(task.remote(store.root, dataset_version, model.modality, spec.sources, classes, spec.seed,
                                          "cuda" if train.use_gpu else "cpu"))
    except Exception as exc:  # a trained model is published anyway; its rows are scored without references
        progress.say(f"[{spec.name}] quality references failed ({type(exc).__name__}: {exc}); publishing "
                     "without them (generation then skips the label and near-copy checks for this version)", logging.WARNING)
        return None
    card["seconds"] = round(time.time() - started, 2)
    return files, card


def _samples(model: aigc_models.GenerativeModel, per_class: int) -> dict[str, bytes]:
    """A picture (image models: one row per class) or a text file (text models) of fixed-seed samples."""
    if model.modality == "image":
        classes = list(getattr(model.config, "classes", []) or [None])
        conditions = [c for c in classes for _ in range(per_class)]
        images = model.sample(conditions, seeds=list(range(len(conditions))))
        buf = io.BytesIO()
        grid(images, ncol=per_class).save(buf, format="PNG")
        return {"samples.png": buf.getvalue()}
    prompts = ["The ", "A ", "In "]
    texts = model.sample([p for p in prompts for _ in range(3)], seeds=list(range(3 * len(prompts))))
    return {"samples.txt": ("\n\n".join(texts) + "\n").encode()}


def _samples_by_epoch(progress: list[dict]) -> dict[str, bytes]:
    """The fixed-seed samples taken after every epoch: one row of images per epoch, or the texts by epoch."""
    if not progress:
        return {}
    if "images" in progress[0]:
        images = [img for p in progress for img in p["images"].numpy()]
        buf = io.BytesIO()
        grid(images, ncol=len(progress[0]["images"])).save(buf, format="PNG")
        return {"samples_by_epoch.png": buf.getvalue()}
    text = "\n".join(f"--- epoch {p['epoch']} (step {p['step']})\n" + "\n".join(p["texts"]) for p in progress)
    return {"samples_by_epoch.txt": (text + "\n").encode()}


def _loss_curve(metrics: pd.DataFrame, name: str) -> bytes:
    """Every loss-like metric against the optimiser step, as a PNG: training losses from the per-step rows
    (per-epoch rows when there are none), validation losses from the per-epoch rows."""
    metrics = metrics.sort_values("step", kind="stable").reset_index(drop=True)
    steps = metrics["scope"] == "step"
    series = {}
    for c in (c for c in metrics.columns if "loss" in c or c in ("recon", "kl", "val_recon", "val_kl")):
        rows = ~steps if c.startswith("val_") or not steps.any() else steps
        series[c] = metrics[c].where(rows).astype(float).tolist()
    buf = io.BytesIO()
    line_chart(metrics["step"].tolist(), series, f"{name}: loss by step").save(buf, format="PNG")
    return buf.getvalue()


def _code_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"
