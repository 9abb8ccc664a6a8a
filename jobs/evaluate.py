"""The quality gate's figures: how good a model's output is as a distribution, not row by row.

The filters (``jobs.quality``) judge single rows; the gate judges a whole set against held-out real data:

- image models: Fréchet distance and KID between generated and held-out (val) real images, in the feature
  space of the label classifier trained on the curated data (raw 16x16 pixels for a model without one);
  conditional accuracy (the classifier's top class is the requested label); improved precision/recall
  (k-NN manifolds, k=3); memorisation rate (share closer to a training image than the near-copy threshold);
  augmentation lift (``augmentation_lift``).
- text models: held-out perplexity, distinct-1/2, self-similarity and copy rate (share of texts whose
  shingles are mostly found in the training texts).

Two sets get these figures: a *candidate* model right after training (``evaluate_model``: it samples a fixed
seed set, the same seeds for the candidate and for production, so the comparison is paired), and tonight's
*output* before it is published (``evaluate_rows``). ``check`` compares figures with the config's absolute
bounds and with a baseline (``GateSpec.relative``). Both run as Ray tasks, on a GPU with ``use_gpu``.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from aigc_models import quality as q

from . import registry
from .images import decode_png
from .quality import Scorer, curated_rows, decode_images
from .specs import GATE_METRICS, GateSpec, LiftSpec
from .storage import Store

EVAL_SEED = 1_000_000_007  # evaluation samples use seeds EVAL_SEED + i: same for every version of a model
SAMPLE_CHUNK = 256
MAX_REAL_IMAGES = 5000  # held-out real images the figures compare with (an even stride through val)
DEFAULT_PROMPTS = ("The ", "A ", "In ")


# ---- figures ------------------------------------------------------------------------------------

def image_figures(scorer: Scorer, pixels: np.ndarray, labels: list[str | None], real: np.ndarray) -> dict[str, float]:
    """The image figures of generated ``pixels`` (``uint8 [N, H, W, C]``) against ``real`` held-out images."""
    if scorer.classifier is not None:
        fake_f, real_f = q.classifier_features(scorer.classifier, pixels), q.classifier_features(scorer.classifier, real)
    else:
        fake_f, real_f = q.pixel_features(pixels).astype(np.float64), q.pixel_features(real).astype(np.float64)
    out: dict[str, float] = {}
    if len(fake_f) >= 2 and len(real_f) >= 2:
        out["fd"] = q.frechet_distance(real_f, fake_f)
        out["kid"] = q.kernel_inception_distance(real_f, fake_f)
        out["precision"], out["recall"] = q.precision_recall(real_f, fake_f)
    if scorer.classifier is not None:
        asked = [(i, scorer.classes[l]) for i, l in enumerate(labels) if l in scorer.classes]
        if asked:
            idx, want = (np.array(v) for v in zip(*asked))
            pred = q.class_probabilities(scorer.classifier, pixels[idx]).argmax(axis=1)
            out["conditional_accuracy"] = float((pred == want).mean())
    if scorer.features is not None and scorer.near_copy_threshold is not None and len(pixels):
        dist, _ = q.nearest(q.pixel_features(pixels), scorer.features)
        out["memorisation_rate"] = float((dist < scorer.near_copy_threshold).mean())
    return out


def text_figures(scorer: Scorer, texts: list[str], copy_overlap: float) -> dict[str, float]:
    out = {"distinct_1": q.distinct_n(texts, 1), "distinct_2": q.distinct_n(texts, 2),
           "self_similarity": q.self_similarity(texts)}
    if scorer.shingles is not None:
        overlaps = [q.overlap(t, scorer.shingles) for t in texts]
        judged = [o for o in overlaps if o is not None]
        out["copy_rate"] = float(np.mean([o > copy_overlap for o in judged])) if judged else 0.0
    return out


def _real_images(store: Store, card: dict[str, Any], sources: list[str] | None) -> tuple[np.ndarray, str]:
    """Held-out real images (val), or train when a dataset has no val rows."""
    for split in ("val", "train"):
        table = curated_rows(store, card["dataset_version"], split, "image", sources, ["label", "image"])
        if table is not None and table.num_rows >= 2:
            if table.num_rows > MAX_REAL_IMAGES:
                table = table.take(np.linspace(0, table.num_rows - 1, MAX_REAL_IMAGES).round().astype(np.int64))
            return decode_images(table), split
    raise ValueError(f"curated dataset {card['dataset_version']} has no real images to compare model {card['name']} with")


# ---- a candidate model ----------------------------------------------------------------------------

def evaluate_model(store_root: str, model_path: str, sources: list[str] | None, gate: dict[str, Any],
                   prompts: list[str] | None, device: str = "cpu") -> dict[str, Any]:
    """Samples a fixed seed set from the model at ``model_path`` and computes its figures (a Ray task)."""
    started = time.time()
    spec = GateSpec.model_validate(gate)
    store = Store(store_root)
    card = store.read_json(model_path, "model_card.json")
    model = registry.load(store, registry.ModelRef(card["name"], card["version"], model_path, card), device=device)
    scorer = Scorer(store, model_path, card)
    if model.modality == "image":
        classes = list(getattr(model.config, "classes", None) or []) or [None]
        conditions = [c for c in classes for _ in range(spec.samples_per_label)]
        pixels = np.concatenate([np.stack(model.sample(conditions[i:i + SAMPLE_CHUNK],
                                                       seeds=[EVAL_SEED + j for j in range(i, min(i + SAMPLE_CHUNK, len(conditions)))]))
                                 for i in range(0, len(conditions), SAMPLE_CHUNK)])
        real, reference = _real_images(store, card, sources)
        figures = image_figures(scorer, pixels, conditions, real)
        meta = {"samples": len(pixels), "real_images": len(real), "reference_split": reference}
    else:
        use = list(prompts or DEFAULT_PROMPTS)
        conditions = [use[i % len(use)] for i in range(spec.text_samples)]
        texts = model.sample(conditions, seeds=[EVAL_SEED + i for i in range(len(conditions))])
        figures = text_figures(scorer, [t[len(p):] if t.startswith(p) else t for t, p in zip(texts, conditions)],
                               spec.copy_overlap)
        val = curated_rows(store, card["dataset_version"], "val", "text", sources, ["text"])
        docs = [t for t in (val.column("text").to_pylist() if val is not None else []) if t][:spec.val_texts]
        if docs:
            figures["perplexity"] = q.perplexity(model, docs)
        meta = {"samples": len(texts), "val_texts": len(docs), "prompts": use}
    return {"model": card["name"], "version": card["version"], "figures": figures, **meta,
            "feature_space": "classifier" if scorer.classifier is not None else "pixels",
            "seconds": round(time.time() - started, 2)}


# ---- tonight's output -------------------------------------------------------------------------------

def _rows(store: Store, rows_path: str, model_name: str, columns: list[str], limit: int) -> Any:
    """Up to ``limit`` rows of ``model_name`` from a folder of generated Parquet, at an even stride."""
    dataset = pads.dataset(store.path(rows_path), filesystem=store.fs, format="parquet")
    filt = pc.field("model_name") == model_name
    n = dataset.count_rows(filter=filt)
    if n == 0:
        return dataset.to_table(columns=columns, filter=filt)
    keep = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))
    return dataset.filter(filt).take(keep, columns=columns)


def evaluate_rows(store_root: str, rows_path: str, model_name: str, model_path: str, sources: list[str] | None,
                  gate: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The figures of one model's rows in ``rows_path`` (tonight's staged output), plus the augmentation lift
    for a conditional image model (a Ray task)."""
    started = time.time()
    spec = GateSpec.model_validate(gate)
    store = Store(store_root)
    card = store.read_json(model_path, "model_card.json")
    scorer = Scorer(store, model_path, card)
    if card["modality"] == "image":
        table = _rows(store, rows_path, model_name, ["label", "image"], spec.max_rows)
        if table.num_rows == 0:
            return {"model": model_name, "version": card["version"], "figures": {}, "rows": 0}
        pixels = np.stack([decode_png(img["bytes"]) for img in table.column("image").to_pylist()])
        labels = table.column("label").to_pylist()
        real, reference = _real_images(store, card, sources)
        figures = image_figures(scorer, pixels, labels, real)
        lift = augmentation_lift(store, card, sources, scorer, pixels, labels, spec.lift, device) if spec.lift.enabled else None
        if lift:
            figures["augmentation_lift"] = lift["lift"]
        meta: dict[str, Any] = {"rows": int(table.num_rows), "real_images": len(real), "reference_split": reference,
                                "augmentation_lift": lift}
    else:
        table = _rows(store, rows_path, model_name, ["prompt", "text"], spec.max_rows)
        texts = [t[len(p or ""):] if t and p and t.startswith(p) else (t or "")
                 for t, p in zip(table.column("text").to_pylist(), table.column("prompt").to_pylist())]
        figures = text_figures(scorer, texts, spec.copy_overlap) if texts else {}
        meta = {"rows": int(table.num_rows)}
    return {"model": model_name, "version": card["version"], "figures": figures, **meta,
            "seconds": round(time.time() - started, 2)}


def _pick(ids: list[str], labels: list[str | None], per_label: int, seed: int) -> np.ndarray:
    """Indices of ``per_label`` rows per label, chosen by a hash of (seed, id): the same rows every night."""
    order = sorted(range(len(ids)), key=lambda i: hashlib.blake2b(f"{seed}:{ids[i]}".encode(), digest_size=8).digest())
    taken: dict[Any, int] = {}
    keep = []
    for i in order:
        if taken.get(labels[i], 0) < per_label:
            taken[labels[i]] = taken.get(labels[i], 0) + 1
            keep.append(i)
    return np.array(sorted(keep), dtype=np.int64)


def _accuracy(pixels: np.ndarray, y: np.ndarray, val: np.ndarray, val_y: np.ndarray, classes: int, seed: int,
              device: str, steps: int) -> float:
    epochs = max(1, math.ceil(steps / max(1, math.ceil(len(pixels) / 64))))
    clf = q.train_classifier(pixels, y, classes, epochs=epochs, seed=seed, device=device)
    return float((q.class_probabilities(clf, val).argmax(axis=1) == val_y).mean())


def augmentation_lift(store: Store, card: dict[str, Any], sources: list[str] | None, scorer: Scorer,
                      pixels: np.ndarray, labels: list[str | None], spec: LiftSpec, device: str = "cpu") -> dict[str, Any] | None:
    """Does tonight's output help a downstream classifier? Held-out accuracy of a small CNN trained on
    ``k_per_label`` real train rows per label, with and without ``synthetic_per_label`` generated rows per label."""
    if scorer.classifier is None:
        return None  # no labels to learn
    classes = scorer.classes
    train = curated_rows(store, card["dataset_version"], "train", "image", sources, ["id", "label", "image"])
    val = curated_rows(store, card["dataset_version"], "val", "image", sources, ["label", "image"])
    if train is None or val is None or val.num_rows == 0:
        return None
    t_labels = train.column("label").to_pylist()
    real_idx = _pick(train.column("id").to_pylist(), t_labels, spec.k_per_label, spec.seed)
    real_idx = real_idx[[t_labels[i] in classes for i in real_idx]]
    real = decode_images(train.take(real_idx))
    real_y = np.array([classes[t_labels[i]] for i in real_idx])
    syn_idx = _pick([str(i) for i in range(len(labels))], labels, spec.synthetic_per_label, spec.seed)
    syn_idx = syn_idx[[labels[i] in classes for i in syn_idx]]
    val_labels = val.column("label").to_pylist()
    keep = np.array([l in classes for l in val_labels])
    val_px, val_y = decode_images(val)[keep], np.array([classes[l] for l in val_labels if l in classes])
    real_acc = _accuracy(real, real_y, val_px, val_y, len(classes), spec.seed, device, spec.steps)
    mixed = np.concatenate([real, pixels[syn_idx]])
    mixed_y = np.concatenate([real_y, np.array([classes[labels[i]] for i in syn_idx], dtype=np.int64)])
    mixed_acc = _accuracy(mixed, mixed_y, val_px, val_y, len(classes), spec.seed, device, spec.steps)
    return {"real_accuracy": real_acc, "mixed_accuracy": mixed_acc, "lift": mixed_acc - real_acc,
            "k_per_label": spec.k_per_label, "synthetic_per_label": spec.synthetic_per_label,
            "real_rows": int(len(real)), "synthetic_rows": int(len(syn_idx)), "val_rows": int(len(val_y))}


evaluate_model_remote = ray.remote(num_cpus=1)(evaluate_model)
evaluate_rows_remote = ray.remote(num_cpus=1)(evaluate_rows)


# ---- the gate ---------------------------------------------------------------------------------------

def check(model: str, figures: dict[str, float], baseline: dict[str, float] | None, spec: GateSpec) -> list[dict[str, Any]]:
    """One entry per bound that applies: ``{model, metric, value, bound, kind, passed}``. A figure that is
    not finite fails its checks; a figure the model does not have (text metrics of an image model) has none."""
    checks = []

    def add(metric: str, bound: float, kind: str) -> None:
        value = figures[metric]
        lower = GATE_METRICS[metric] == "lower"
        ok = math.isfinite(value) and (value <= bound if lower else value >= bound)
        checks.append({"model": model, "metric": metric, "value": value, "bound": bound, "kind": kind, "passed": bool(ok)})

    for metric, bound in spec.absolute.items():
        if metric in figures:
            add(metric, bound, "absolute")
    for metric, tol in spec.relative.items():
        base = (baseline or {}).get(metric)
        if metric in figures and base is not None and math.isfinite(base):
            add(metric, base + tol * abs(base) if GATE_METRICS[metric] == "lower" else base - tol * abs(base), "relative")
    return checks


def failures(checks: list[dict[str, Any]]) -> list[str]:
    """Failed checks as sentences: ``digits-gan: fd 12.4 > 9.1 (relative: +50% on the baseline)``."""
    out = []
    for c in checks:
        if not c["passed"]:
            op = ">" if GATE_METRICS[c["metric"]] == "lower" else "<"
            out.append(f"{c['model']}: {c['metric']} {c['value']:.4g} {op} {c['bound']:.4g} ({c['kind']} bound)")
    return out
