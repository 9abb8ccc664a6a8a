"""A trained model (or pretrained weights used as they are) becomes a registry version.

The version folder holds what a person and the later stages need, with no trainer around: the weights (our
checkpoint format), the card (``ModelCard``), ``metrics.parquet`` and ``loss_curve.png``, fixed-seed samples
(``samples.png``/``.txt``, and ``samples_by_epoch``), and the quality references built from the curated data
(``jobs.gate.references``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

import aigc_models
from aigc_models.text import DEFAULT_PROMPTS
from jobs.gate.references import build_references_remote
from jobs.runtime import progress
from jobs.store import registry
from jobs.store.pictures import grid, line_chart_png
from jobs.store.registry import ModelCard, ModelRef
from jobs.store.storage import Store
from jobs.train.policy import spec_fingerprint
from jobs.train.spec import ModelSpec, TrainSpec

NOT_METRICS = ("scope", "epoch", "step", "seconds")


@dataclasses.dataclass
class Trained:
    """What a training run left on the driver (or, for weights used as they are, what stands in for it)."""

    model: aigc_models.GenerativeModel
    dataset_version: str
    train_rows: int
    seconds: float
    state: dict[str, Any]  # step, epoch, resumed_from, workers (the checkpoint's training state)
    metrics: pd.DataFrame | None = None  # None: nothing was trained
    epoch_samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    run_name: str | None = None  # the Ray Train run

    @property
    def final_metrics(self) -> dict[str, float]:
        if self.metrics is None:
            return {}
        rows = self.metrics[self.metrics["scope"] == "epoch"] if "scope" in self.metrics else self.metrics
        return {k: float(v) for k, v in rows.iloc[-1].items() if k not in NOT_METRICS}

    @property
    def samples_per_second(self) -> float | None:
        if self.metrics is None:
            return None
        return round(float(self.metrics.loc[self.metrics["scope"] == "epoch", "samples_per_second"].mean()), 2)


def loss_series(metrics: pd.DataFrame, family: str) -> tuple[list[float], dict[str, list[float]]]:
    """(steps, series) of the family's loss metrics and their ``val_`` twins, sorted by step: training losses from
    the per-step rows (per-epoch rows when there are none), validation losses from the per-epoch rows."""
    names = aigc_models.FAMILIES[family].loss_metrics if family in aigc_models.FAMILIES else ("loss",)
    metrics = metrics.sort_values("step", kind="stable").reset_index(drop=True)
    steps = metrics["scope"] == "step"
    series = {}
    for c in (c for c in metrics.columns if c in names or c.removeprefix("val_") in names and c.startswith("val_")):
        rows = ~steps if c.startswith("val_") or not steps.any() else steps
        series[c] = metrics[c].where(rows).astype(float).tolist()
    return metrics["step"].astype(float).tolist(), series


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _pictures(trained: Trained, name: str, per_class: int) -> dict[str, bytes]:
    """Samples (image models: a row per class; text models: three per default prompt), samples by epoch, and the
    loss curve."""
    model, files = trained.model, {}
    if model.modality == "image":
        conditions = [c for c in list(getattr(model.config, "classes", []) or [None]) for _ in range(per_class)]
        files["samples.png"] = _png(grid(model.sample(conditions, seeds=list(range(len(conditions)))), ncol=per_class))
    else:
        texts = model.sample([p for p in DEFAULT_PROMPTS for _ in range(3)], seeds=list(range(3 * len(DEFAULT_PROMPTS))))
        files["samples.txt"] = ("\n\n".join(texts) + "\n").encode()
    progress_ = trained.epoch_samples
    if progress_ and "images" in progress_[0]:
        images = [img for p in progress_ for img in p["images"].numpy()]
        files["samples_by_epoch.png"] = _png(grid(images, ncol=len(progress_[0]["images"])))
    elif progress_:
        text = "\n".join(f"--- epoch {p['epoch']} (step {p['step']})\n" + "\n".join(p["texts"]) for p in progress_)
        files["samples_by_epoch.txt"] = (text + "\n").encode()
    if trained.metrics is not None:
        steps, series = loss_series(trained.metrics, model.family)
        files["loss_curve.png"] = _png(line_chart_png(steps, series, f"{name}: loss by step"))
    return files


@dataclasses.dataclass
class PendingReferences:
    """Quality references being built in a Ray task. They depend on the curated data alone, never on the weights,
    so training starts them before its workers and they are built while Ray Train starts up and trains."""

    name: str
    task: ray.ObjectRef | None  # None: the config turned references off

    def result(self) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """(files, card section), or None. A failure costs the version its references, not its registration."""
        if self.task is None:
            return None
        try:
            return ray.get(self.task)
        except Exception as exc:
            progress.say(f"[{self.name}] quality references failed ({type(exc).__name__}: {exc}); publishing "
                         "without them (generation then skips the label and near-copy checks for this version)", logging.WARNING)
            return None

    def cancel(self) -> None:
        """Training failed: nothing will register these references (and the fit's own error is what counts)."""
        if self.task is not None:
            try:
                ray.cancel(self.task)
            except Exception:
                pass


def start_references(spec: ModelSpec, train: TrainSpec, store: Store, dataset_version: str,
                     model: aigc_models.GenerativeModel) -> PendingReferences:
    """Starts building ``model``'s references (label classifier, training pixels or shingles) in a Ray task on the
    same kind of device as training. ``model`` tells the modality and classes; an untrained probe will do."""
    if not train.quality_references:
        return PendingReferences(spec.name, None)
    classes = list(getattr(model.config, "classes", None) or []) if model.modality == "image" else []
    task = build_references_remote.options(num_gpus=1 if train.use_gpu else 0).remote(
        store.root, dataset_version, model.modality, spec.sources, classes, spec.seed, "cuda" if train.use_gpu else "cpu")
    return PendingReferences(spec.name, task)


def register_version(store: Store, spec: ModelSpec, train: TrainSpec, trained: Trained, promote: bool,
                     references: PendingReferences, started: float | None = None) -> ModelRef:
    """Writes the version folder and registers it (``promote``: production at once), with the ``references``
    started before training. ``started``: when a version that was not trained began, so its wall time covers
    building its references (a trained version's is the run's)."""
    model = trained.model
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "model.safetensors")
        sha = aigc_models.save(model, weights, extra={"model_name": spec.name, "dataset_version": trained.dataset_version})
        with open(weights, "rb") as f:
            files = {"model.safetensors": f.read()}
    if trained.metrics is not None:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(trained.metrics, preserve_index=False), buf)
        files["metrics.parquet"] = buf.getvalue()
    files.update(_pictures(trained, spec.name, train.sample_grid))
    references = references.result()
    if references:
        files.update(references[0])
    if started is not None:
        trained = dataclasses.replace(trained, seconds=time.time() - started)
    card = ModelCard(
        name=spec.name, version=f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{sha[:8]}", family=model.family,
        modality=model.modality, config=dataclasses.asdict(model.config), parameters=model.num_parameters(),
        dataset_version=trained.dataset_version, train_rows=trained.train_rows, steps=int(trained.state["step"]),
        epochs=int(trained.state["epoch"]), wall_seconds=round(trained.seconds, 2),
        samples_per_second=trained.samples_per_second, final_metrics=trained.final_metrics, checkpoint_sha256=sha,
        ray_train_run=trained.run_name, num_workers=train.num_workers, use_gpu=train.use_gpu,
        sampler_defaults=model.sampler_defaults(), code_version=_code_version(),
        created_at=datetime.now(timezone.utc).isoformat(), resumed_from=trained.state.get("resumed_from"),
        workers=trained.state.get("workers", []), quality=references[1] if references else None,
        spec_fingerprint=spec_fingerprint(spec, train),
        output_shape=model.output_shape if model.modality == "image" else None, used_as_is=not spec.finetune)
    return registry.register(store, card, files, promote)


def _code_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"
