"""The augmentation lift: does tonight's output help a downstream classifier?

Held-out (val) accuracy of a small CNN trained on ``k_per_label`` real train rows per label plus
``synthetic_per_label`` of tonight's rows per label, minus the same classifier trained on the real rows alone.
Rows are picked by a hash of (seed, id) (``jobs.data.selection``), so the same night gives the same figure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import ray

from aigc_models import quality as q
from jobs.data.curated import curated_rows, decode_images
from jobs.data.selection import pick
from jobs.gate.references import References
from jobs.gate.spec import LiftSpec
from jobs.store.registry import ModelCard
from jobs.store.storage import Store


def _per_label(ids: list[str], labels: list[Any], per_label: int, seed: int) -> np.ndarray:
    return np.flatnonzero(pick(ids, seed, {l: per_label for l in set(labels)}, labels))


def _accuracy(pixels: np.ndarray, y: np.ndarray, val: np.ndarray, val_y: np.ndarray, classes: int, seed: int,
              device: str, steps: int) -> float:
    epochs = max(1, math.ceil(steps / max(1, math.ceil(len(pixels) / 64))))  # ``steps`` optimiser steps, about
    clf = q.train_classifier(pixels, y, classes, epochs=epochs, seed=seed, device=device)
    return float((q.class_probabilities(clf, val).argmax(axis=1) == val_y).mean())


_accuracy_remote = ray.remote(num_cpus=1)(_accuracy)


def augmentation_lift(store: Store, card: ModelCard, sources: list[str] | None, refs: References,
                      pixels: np.ndarray, labels: list[str | None], spec: LiftSpec,
                      device: str = "cpu") -> dict[str, Any] | None:
    """The lift of ``pixels`` (tonight's rows of ``card``'s model, with their ``labels``), or None for a model
    without a label classifier (nothing to learn) or a dataset without held-out rows."""
    if refs.classifier is None:
        return None
    classes = refs.classes
    train = curated_rows(store, card.dataset_version, "train", "image", sources, ["id", "label", "image"])
    val = curated_rows(store, card.dataset_version, "val", "image", sources, ["label", "image"])
    if train is None or val is None or val.num_rows == 0:
        return None
    t_labels = train.column("label").to_pylist()
    real_idx = _per_label(train.column("id").to_pylist(), t_labels, spec.k_per_label, spec.seed)
    real_idx = real_idx[[t_labels[i] in classes for i in real_idx]]
    real = decode_images(train.take(real_idx))
    real_y = np.array([classes[t_labels[i]] for i in real_idx])
    syn_idx = _per_label([str(i) for i in range(len(labels))], labels, spec.synthetic_per_label, spec.seed)
    syn_idx = syn_idx[[labels[i] in classes for i in syn_idx]]
    val_labels = val.column("label").to_pylist()
    keep = np.array([l in classes for l in val_labels])
    val_px, val_y = decode_images(val)[keep], np.array([classes[l] for l in val_labels if l in classes])
    arm = (val_px, val_y, len(classes), spec.seed, device, spec.steps)
    # The two classifiers are independent: on CPU, with Ray up, the real-only one trains in a task of its own
    # (a CPU of its own) while this process trains the other (13.5 s -> 7 s for the demo's gate). On a GPU both
    # stay here: a second task would wait for a GPU this one holds.
    beside = _accuracy_remote.remote(real, real_y, *arm) if device == "cpu" and ray.is_initialized() else None
    mixed = np.concatenate([real, pixels[syn_idx]])
    mixed_y = np.concatenate([real_y, np.array([classes[labels[i]] for i in syn_idx], dtype=np.int64)])
    mixed_acc = _accuracy(mixed, mixed_y, *arm)
    real_acc = ray.get(beside) if beside is not None else _accuracy(real, real_y, *arm)
    return {"real_accuracy": real_acc, "mixed_accuracy": mixed_acc, "lift": mixed_acc - real_acc,
            "k_per_label": spec.k_per_label, "synthetic_per_label": spec.synthetic_per_label,
            "real_rows": int(len(real)), "synthetic_rows": int(len(syn_idx)), "val_rows": int(len(val_y))}
