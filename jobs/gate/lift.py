"""The augmentation lift: does tonight's output help a downstream classifier?

Held-out (val) accuracy of a small CNN trained on ``k_per_label`` real train rows per label plus
``synthetic_per_label`` of tonight's rows per label, minus the same classifier trained on the real rows alone.
Rows are picked by a hash of (seed, id) (``jobs.data.selection``), so the same night gives the same figure. One
such pair of classifiers is noisy (a few held-out digits either way: about +-0.02 on the demo,
``benchmarks/image_quality.py``), so the figure is the mean over ``repeats`` pairs, each with its own real rows,
synthetic rows and classifier seed (``seed``, ``seed + 1``, ...); ``lift_sd`` is their spread.
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
    t_labels, t_ids = train.column("label").to_pylist(), train.column("id").to_pylist()
    val_labels = val.column("label").to_pylist()
    keep = np.array([l in classes for l in val_labels])
    val_px, val_y = decode_images(val)[keep], np.array([classes[l] for l in val_labels if l in classes])
    train_px = decode_images(train)
    arms = []  # (real rows, real labels, synthetic rows, classifier seed) per repeat
    for r in range(spec.repeats):
        seed = spec.seed + r
        real_idx = _per_label(t_ids, t_labels, spec.k_per_label, seed)
        real_idx = real_idx[[t_labels[i] in classes for i in real_idx]]
        syn_idx = _per_label([str(i) for i in range(len(labels))], labels, spec.synthetic_per_label, seed)
        arms.append((real_idx, syn_idx[[labels[i] in classes for i in syn_idx]], seed))
    jobs = []
    for real_idx, syn_idx, seed in arms:
        real, real_y = train_px[real_idx], np.array([classes[t_labels[i]] for i in real_idx], dtype=np.int64)
        syn_y = np.array([classes[labels[i]] for i in syn_idx], dtype=np.int64)
        jobs.append((real, real_y, (val_px, val_y, len(classes), seed, device, spec.steps)))
        jobs.append((np.concatenate([real, pixels[syn_idx]]), np.concatenate([real_y, syn_y]), jobs[-1][2]))
    # The classifiers are independent: on CPU, with Ray up, each trains in a task of its own (a CPU each), so the
    # repeats cost little more wall time than one. On a GPU they run here, one after the other: a task would wait
    # for the GPU this one holds.
    if device == "cpu" and ray.is_initialized():
        accs = ray.get([_accuracy_remote.remote(x, y, *arm) for x, y, arm in jobs])
    else:
        accs = [_accuracy(x, y, *arm) for x, y, arm in jobs]
    real_accs, mixed_accs = np.array(accs[0::2]), np.array(accs[1::2])
    lifts = mixed_accs - real_accs
    return {"real_accuracy": float(real_accs.mean()), "mixed_accuracy": float(mixed_accs.mean()),
            "lift": float(lifts.mean()), "lift_sd": float(lifts.std(ddof=1)) if len(lifts) > 1 else None,
            "lifts": [round(float(x), 4) for x in lifts], "repeats": spec.repeats,
            "k_per_label": spec.k_per_label, "synthetic_per_label": spec.synthetic_per_label,
            "real_rows": int(len(arms[0][0])), "synthetic_rows": int(len(arms[0][1])), "val_rows": int(len(val_y))}
