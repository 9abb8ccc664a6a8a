"""The quality gate's figures: how good a model's output is as a distribution, not row by row.

The filters (``jobs.generate.filters``) judge single rows; the gate judges a whole set against held-out real data:

- image models: Fréchet distance and KID between generated and held-out (val) real images, in the feature
  space of the label classifier trained on the curated data (raw 16x16 pixels for a model without one);
  conditional accuracy (the classifier's top class is the requested label); improved precision/recall
  (k-NN manifolds, k=3); memorisation rate (share closer to a training image than the near-copy threshold);
  augmentation lift (``jobs.gate.lift``).
- text models: held-out perplexity, distinct-1/2 (distinct word n-grams), self-similarity, copy rate
  (share of texts whose shingles are mostly found in the training texts), and word validity: ``real_words`` (the
  share of generated words in wordfreq's English list) and ``real_texts`` (the share of texts at least 80% real
  words), which is what tells language from word-shaped noise.

Two sets get these figures: a *candidate* model right after training (``evaluate_model``: it samples a fixed
seed set, the same seeds for the candidate and for production, so the comparison is paired), and tonight's
*output* before it is published (``evaluate_rows``). ``jobs.gate.policy`` compares them with the bounds. Both
run as Ray tasks, on a GPU with ``use_gpu``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from aigc_models import quality as q
from aigc_models.text import DEFAULT_PROMPTS
from jobs.data.curated import curated_rows, decode_images
from jobs.gate.lift import augmentation_lift
from jobs.gate.references import References
from jobs.gate.spec import GateSpec
from jobs.gate.words import word_validity
from jobs.store import registry
from jobs.store.registry import ModelCard, ModelRef
from jobs.store.storage import Store

EVAL_SEED = 1_000_000_007  # evaluation samples use seeds EVAL_SEED + i: same for every version of a model
SAMPLE_CHUNK = 256
MAX_REAL_IMAGES = 5000  # held-out real images the figures compare with (an even stride through val)


def image_figures(refs: References, pixels: np.ndarray, labels: list[str | None], real: np.ndarray) -> dict[str, float]:
    """The image figures of generated ``pixels`` (``uint8 [N, H, W, C]``) against ``real`` held-out images."""
    if refs.classifier is not None:
        fake_f, real_f = q.classifier_features(refs.classifier, pixels), q.classifier_features(refs.classifier, real)
    else:
        fake_f, real_f = q.pixel_features(pixels).astype(np.float64), q.pixel_features(real).astype(np.float64)
    out: dict[str, float] = {}
    if len(fake_f) >= 2 and len(real_f) >= 2:
        out["fd"] = q.frechet_distance(real_f, fake_f)
        out["kid"] = q.kernel_inception_distance(real_f, fake_f)
        out["precision"], out["recall"] = q.precision_recall(real_f, fake_f)
    if refs.classifier is not None:
        asked = [(i, refs.classes[l]) for i, l in enumerate(labels) if l in refs.classes]
        if asked:
            idx, want = (np.array(v) for v in zip(*asked))
            pred = q.class_probabilities(refs.classifier, pixels[idx]).argmax(axis=1)
            out["conditional_accuracy"] = float((pred == want).mean())
    if refs.features is not None and refs.near_copy_threshold is not None and len(pixels):
        dist, _ = q.nearest(q.pixel_features(pixels), refs.features)
        out["memorisation_rate"] = float((dist < refs.near_copy_threshold).mean())
    return out


def text_figures(refs: References, texts: list[str], copy_overlap: float) -> dict[str, float]:
    out = {"distinct_1": q.distinct_n(texts, 1), "distinct_2": q.distinct_n(texts, 2),
           "self_similarity": q.self_similarity(texts)}
    out.update({k: v for k, v in word_validity(texts).items() if v == v})  # NaN: no words at all
    if refs.shingles is not None:
        judged = [o for o in map(refs.text_overlap, texts) if o is not None]
        out["copy_rate"] = float(np.mean([o > copy_overlap for o in judged])) if judged else 0.0
    return out


def tokens_of(model: Any) -> str:
    """What a text model's perplexity is per: its tokenizer's kind, size and content. Perplexities over two
    tokenizers are not comparable (a BPE token carries several bytes), so the gate compares them only when this
    is equal (``jobs.gate.policy.candidate_baseline``)."""
    tok, config = model.tokenizer, model.config
    content = getattr(config, "tokenizer_json", "") or getattr(config, "path", "")
    return f"{type(tok).__name__}/{tok.vocab_size}/{hashlib.sha256(content.encode()).hexdigest()[:12]}"


def _real_images(store: Store, card: ModelCard, sources: list[str] | None) -> tuple[np.ndarray, str]:
    """Held-out real images (val), or train when a dataset has no val rows."""
    for split in ("val", "train"):
        table = curated_rows(store, card.dataset_version, split, "image", sources, ["label", "image"])
        if table is not None and table.num_rows >= 2:
            if table.num_rows > MAX_REAL_IMAGES:
                table = table.take(np.linspace(0, table.num_rows - 1, MAX_REAL_IMAGES).round().astype(np.int64))
            return decode_images(table), split
    raise ValueError(f"curated dataset {card.dataset_version} has no real images to compare model {card.name} with")


# ---- a candidate model ----------------------------------------------------------------------------

def evaluate_model(store_root: str, ref: ModelRef, sources: list[str] | None, gate: GateSpec,
                   prompts: list[str] | None, device: str = "cpu") -> dict[str, Any]:
    """Samples a fixed seed set from the version ``ref`` and computes its figures (a Ray task)."""
    started, store = time.time(), Store(store_root)
    model = registry.load(store, ref, device=device)
    refs = References.load(store, ref)
    if model.modality == "image":
        conditions = [c for c in ref.card.classes or [None] for _ in range(gate.samples_per_label)]
        pixels = np.concatenate([np.stack(model.sample(conditions[i:i + SAMPLE_CHUNK], seeds=[
            EVAL_SEED + j for j in range(i, min(i + SAMPLE_CHUNK, len(conditions)))]))
            for i in range(0, len(conditions), SAMPLE_CHUNK)])
        real, reference = _real_images(store, ref.card, sources)
        figures = image_figures(refs, pixels, conditions, real)
        meta = {"samples": len(pixels), "real_images": len(real), "reference_split": reference}
    else:
        use = list(prompts or DEFAULT_PROMPTS)
        conditions = [use[i % len(use)] for i in range(gate.text_samples)]
        texts = model.sample(conditions, seeds=[EVAL_SEED + i for i in range(len(conditions))])
        figures = text_figures(refs, [t[len(p):] if t.startswith(p) else t for t, p in zip(texts, conditions)],
                               gate.copy_overlap)
        val = curated_rows(store, ref.card.dataset_version, "val", "text", sources, ["text"])
        docs = [t for t in (val.column("text").to_pylist() if val is not None else []) if t][:gate.val_texts]
        if docs:
            figures["perplexity"] = q.perplexity(model, docs)
        meta = {"samples": len(texts), "val_texts": len(docs), "prompts": use, "tokens": tokens_of(model)}
    return {"model": ref.name, "version": ref.version, "figures": figures, **meta,
            "feature_space": "classifier" if refs.classifier is not None else "pixels",
            "seconds": round(time.time() - started, 2)}


# ---- tonight's output -------------------------------------------------------------------------------

def _rows(store: Store, rows_path: str, model_name: str, columns: list[str], limit: int) -> pa.Table:
    """Up to ``limit`` rows of ``model_name`` from a folder of generated Parquet, at an even stride."""
    dataset = pads.dataset(store.path(rows_path), filesystem=store.fs, format="parquet")
    filt = pc.field("model_name") == model_name
    n = dataset.count_rows(filter=filt)
    if n == 0:
        return dataset.to_table(columns=columns, filter=filt)
    keep = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))
    return dataset.filter(filt).take(keep, columns=columns)


def evaluate_rows(store_root: str, rows_path: str, ref: ModelRef, sources: list[str] | None, gate: GateSpec,
                  device: str = "cpu") -> dict[str, Any]:
    """The figures of ``ref``'s rows in ``rows_path`` (tonight's staged output), plus the augmentation lift for
    a conditional image model (a Ray task)."""
    started, store = time.time(), Store(store_root)
    refs = References.load(store, ref)
    meta: dict[str, Any] = {}
    if ref.card.modality == "image":
        table = _rows(store, rows_path, ref.name, ["label", "image"], gate.max_rows)
        if table.num_rows == 0:
            return {"model": ref.name, "version": ref.version, "figures": {}, "rows": 0}
        pixels, labels = decode_images(table), table.column("label").to_pylist()
        real, reference = _real_images(store, ref.card, sources)
        figures = image_figures(refs, pixels, labels, real)
        lift = augmentation_lift(store, ref.card, sources, refs, pixels, labels, gate.lift, device) \
            if gate.lift.enabled else None
        if lift:
            figures["augmentation_lift"] = lift["lift"]
        meta = {"real_images": len(real), "reference_split": reference, "augmentation_lift": lift}
    else:
        table = _rows(store, rows_path, ref.name, ["prompt", "text"], gate.max_rows)
        texts = [t[len(p or ""):] if t and p and t.startswith(p) else (t or "")
                 for t, p in zip(table.column("text").to_pylist(), table.column("prompt").to_pylist())]
        figures = text_figures(refs, texts, gate.copy_overlap) if texts else {}
    return {"model": ref.name, "version": ref.version, "figures": figures, "rows": int(table.num_rows), **meta,
            "seconds": round(time.time() - started, 2)}


evaluate_model_remote = ray.remote(num_cpus=1)(evaluate_model)
evaluate_rows_remote = ray.remote(num_cpus=1)(evaluate_rows)

EVALUATION_SETTINGS = ("samples_per_label", "text_samples", "val_texts", "copy_overlap")
EVALUATION_FORMAT = 3  # 2: text evaluations name their tokens; 3: and their word validity; an evaluation.json of another format is recomputed


def _on(device: str, gpus: float) -> dict[str, Any]:
    return {"num_gpus": gpus if device == "cuda" else 0}


def evaluate_version(store: Store, ref: ModelRef, sources: list[str] | None, gate: GateSpec, prompts: list[str] | None,
                     device: str = "cpu", gpus: float = 1.0) -> dict[str, Any]:
    """``ref``'s evaluation, computed once per version and evaluation settings (a Ray task, ``gpus`` GPUs on
    ``cuda``) and kept as ``evaluation.json`` in its folder; a change of the settings it depends on recomputes it."""
    settings = {**{k: getattr(gate, k) for k in EVALUATION_SETTINGS}, "format": EVALUATION_FORMAT}
    if store.exists(ref.path, "evaluation.json"):
        saved = store.read_json(ref.path, "evaluation.json")
        if saved.get("settings") == settings:
            return saved
    task = evaluate_model_remote.options(**_on(device, gpus))
    result = {**ray.get(task.remote(store.root, ref, sources, gate, prompts, device)), "settings": settings}
    store.write_json(result, ref.path, "evaluation.json")
    return result


def evaluate_night(store: Store, rows_path: str, models: dict[str, tuple[ModelRef, list[str] | None]], gate: GateSpec,
                   device: str = "cpu", gpus: float = 1.0) -> dict[str, dict[str, Any]]:
    """``evaluate_rows`` of every model's rows in ``rows_path`` (``models``: name -> (version, its sources)),
    the models' Ray tasks side by side."""
    task = evaluate_rows_remote.options(**_on(device, gpus))
    futures = {name: task.remote(store.root, rows_path, ref, sources, gate, device) for name, (ref, sources) in models.items()}
    return {name: ray.get(f) for name, f in futures.items()}
