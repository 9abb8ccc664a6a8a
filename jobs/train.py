"""Training on Ray Train: one generic loop for every model family, DDP across workers.

The driver (``run_training``) reads the curated split through Ray Data, derives what the data decides
(image size, channels, classes), and starts a ``TorchTrainer``. Each worker runs ``train_loop_per_worker``:
it builds the model from its config, wraps it with Ray Train's ``prepare_model`` (DDP), streams its shard
of the dataset, steps one optimiser per model phase, and reports checkpoints (weights as safetensors,
optimiser states, metrics so far). The finished run is published to the model registry.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import aigc_models
from aigc_models.text import train_bpe

from . import registry
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


# ---- the driver ----------------------------------------------------------------------------------

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
    """Hyperparameters from the spec plus the fields the data decides, for configs that have them."""
    cls = aigc_models.FAMILIES[spec.family].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    manifest = store.read_json("curated", dataset_version, "_manifest.json")
    derived = {"resolution": manifest["preprocess"]["resolution"], "channels": manifest["preprocess"]["channels"],
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


def run_training(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str | None = None) -> TrainResult:
    started = time.time()
    dataset_version = resolve_dataset_version(store, dataset_version)
    n_rows, classes = split_stats(store, dataset_version, "train", spec.modality, spec.sources)
    if n_rows == 0:
        raise ValueError(f"model {spec.name}: curated dataset {dataset_version} has no {spec.modality} rows to train on"
                         + (f" from sources {spec.sources}" if spec.sources else ""))
    config = model_config(spec, store, dataset_version, classes)
    gpus = ray.cluster_resources().get("GPU", 0)
    if train.use_gpu and gpus < train.num_workers:
        raise ValueError(f"train.use_gpu is true with {train.num_workers} workers, but the Ray cluster has {gpus:g} GPUs")
    probe = aigc_models.build(spec.family, config)  # fails here, before any worker starts, on a bad config
    epochs, batch_size = spec.epochs or train.epochs, spec.batch_size or train.batch_size
    per_epoch = math.ceil(math.ceil(n_rows // train.num_workers / batch_size) / train.grad_accum)
    total_steps = min(epochs * max(1, per_epoch), spec.max_steps or 10**12)  # optimiser steps, for the LR schedule
    n_val = split_stats(store, dataset_version, "val", spec.modality, spec.sources)[0] if train.validation else 0
    loop_config = {
        "name": spec.name, "family": spec.family, "model_config": config, "seed": spec.seed,
        "epochs": epochs, "max_steps": spec.max_steps,
        "batch_size": batch_size, "checkpoint_every": train.checkpoint_every,
        "grad_clip": train.grad_clip, "precision": train.precision, "grad_accum": train.grad_accum,
        "warmup_steps": train.warmup_steps, "lr_schedule": train.lr_schedule, "min_lr_ratio": train.min_lr_ratio,
        "total_steps": total_steps, "validate": bool(n_val),
    }
    resources = train.resources_per_worker or ({"CPU": 1, "GPU": 1} if train.use_gpu else {"CPU": 1})
    run_name = f"{spec.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    data_context = ray.data.DataContext.get_current()
    progress_bars, data_context.enable_progress_bars = data_context.enable_progress_bars, False  # per-epoch bars of the shards are noise
    datasets = {split: training_dataset(store, dataset_version, split, spec.modality, spec.sources)
                for split in (("train", "val") if n_val else ("train",))}
    if train.cache_dataset:  # decoded once, before the workers take their CPUs (Ray Data then needs none)
        datasets = {split: ds.materialize() for split, ds in datasets.items()}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources,
                                     placement_strategy=train.placement_strategy),
        run_config=RunConfig(name=run_name, storage_path=store.path("checkpoints", spec.name), storage_filesystem=store.fs,
                             failure_config=FailureConfig(max_failures=train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints)),
        datasets=datasets,
    )
    try:
        result = trainer.fit()
    finally:
        data_context.enable_progress_bars = progress_bars
    if result.checkpoint is None:
        raise RuntimeError(f"training of {spec.name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        model = aigc_models.load(os.path.join(d, "model.safetensors"))
        metrics = pd.read_parquet(os.path.join(d, "metrics.parquet"))
        state = torch.load(os.path.join(d, "train_state.pt"), weights_only=True)
    seconds = time.time() - started
    final = {k: float(v) for k, v in metrics.iloc[-1].items() if k not in ("epoch", "step", "seconds")}
    ref = _publish_model(store, spec, train, model, metrics, dataset_version, run_name, state, seconds, n_rows, final,
                         probe.num_parameters())
    return TrainResult(ref, int(state["step"]), int(state["epoch"]), seconds,
                       float(metrics["samples_per_second"].mean()), final)


def _publish_model(store: Store, spec: ModelSpec, train: TrainSpec, model: aigc_models.GenerativeModel,
                   metrics: pd.DataFrame, dataset_version: str, run_name: str, state: dict, seconds: float,
                   n_rows: int, final: dict[str, float], n_params: int) -> registry.ModelRef:
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "model.safetensors")
        sha = aigc_models.save(model, weights, extra={"model_name": spec.name, "dataset_version": dataset_version})
        files = {"model.safetensors": open(weights, "rb").read()}
    version = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{sha[:8]}"
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), buf)
    files["metrics.parquet"] = buf.getvalue()
    files.update(_samples(model, train.sample_grid))
    files["loss_curve.png"] = _loss_curve(metrics, spec.name)
    card = {
        "name": spec.name, "version": version, "family": model.family, "modality": model.modality,
        "config": dataclasses.asdict(model.config), "parameters": n_params,
        "dataset_version": dataset_version, "train_rows": n_rows,
        "steps": int(state["step"]), "epochs": int(state["epoch"]), "wall_seconds": round(seconds, 2),
        "samples_per_second": round(float(metrics["samples_per_second"].mean()), 2),
        "final_metrics": final, "checkpoint_sha256": sha, "ray_train_run": run_name,
        "num_workers": train.num_workers, "use_gpu": train.use_gpu, "sampler_defaults": model.sampler_defaults(),
        "code_version": _code_version(), "created_at": datetime.now(timezone.utc).isoformat(),
        "resumed_from": state.get("resumed_from"),
    }
    return registry.register(store, spec.name, version, files, card, promote=train.promote)


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


def _loss_curve(metrics: pd.DataFrame, name: str) -> bytes:
    """Every loss-like metric (train and val) against the optimiser step, as a PNG."""
    columns = [c for c in metrics.columns if "loss" in c or c in ("recon", "kl")]
    buf = io.BytesIO()
    line_chart(metrics["step"].tolist(), {c: metrics[c].tolist() for c in columns}, f"{name}: loss by step").save(buf, format="PNG")
    return buf.getvalue()


def _code_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"
