"""Row by row: each generated row's ``quality`` scores and the filters' verdict on it.

The scores fill the ``quality`` struct of every row (``jobs.store.schema.QUALITY``), published or refused; the
references they compare with are the model's (``jobs.gate.references``). ``verdict`` turns a row's scores and the
``FilterSpec`` into the reason code of the first filter it fails, or None. A refused row is never dropped: it
lands in the night's rejects with that code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aigc_models import quality as q
from jobs.data.cleaning import blocked_term
from jobs.gate.references import References
from jobs.generate.spec import FilterSpec


def score_images(refs: References, pixels: np.ndarray, labels: list[str | None]) -> list[dict[str, Any]]:
    """Scores of ``uint8 [N, H, W, C]`` images asked for with ``labels``: contrast and ink always; the nearest
    training image with pixel references; the classifier's verdict with a label classifier."""
    gray = pixels.astype(np.float64).mean(axis=3)
    border = np.concatenate([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], axis=1).mean(axis=1)
    out = [{"contrast": float(g.std() / 127.5), "ink": float((np.abs(g - b) > 64).mean())} for g, b in zip(gray, border)]
    if refs.features is not None:
        dist, idx = q.nearest(q.pixel_features(pixels), refs.features)
        for o, d, i in zip(out, dist, idx):
            o["nearest_train_distance"], o["nearest_train_id"] = float(d), refs.ids[i] if i >= 0 else None
    if refs.classifier is not None:
        probs = q.class_probabilities(refs.classifier, pixels)
        names = list(refs.classes)
        for o, p, label in zip(out, probs, labels):
            o["predicted_label"] = names[int(p.argmax())]
            o["label_confidence"] = float(p[refs.classes[label]]) if label in refs.classes else None
    return out


def score_text(refs: References, generated: str) -> dict[str, Any]:
    """Scores of a generated text (without its prompt). ``distinct_2`` is the share of distinct word bigrams, the
    gate's ``distinct_2`` on one text."""
    out = {"distinct_2": q.distinct_n([generated], 2), "length": len(generated), "repetition": q.repetition(generated)}
    if refs.shingles is not None:
        out["training_overlap"] = refs.text_overlap(generated)
    return out


def _image_verdict(quality: dict[str, Any], spec: FilterSpec, near_copy_threshold: float | None) -> tuple[str, str] | None:
    conf = quality.get("label_confidence")
    if spec.min_label_confidence is not None and conf is not None and conf < spec.min_label_confidence:
        return "low_label_confidence", (f"classifier gives the requested label {conf:.3f} < {spec.min_label_confidence} "
                                        f"(it sees {quality.get('predicted_label')!r})")
    limit = spec.near_copy_distance if spec.near_copy_distance is not None else near_copy_threshold
    dist = quality.get("nearest_train_distance")
    if spec.near_copy and limit is not None and dist is not None and dist < limit:
        return "near_copy", f"RMS distance {dist:.4f} < {limit:.4f} to training image {quality.get('nearest_train_id')}"
    if spec.min_contrast is not None and quality["contrast"] < spec.min_contrast:
        return "blank_image", f"contrast {quality['contrast']:.4f} < {spec.min_contrast}"
    return None


def _text_verdict(quality: dict[str, Any], text: str, spec: FilterSpec) -> tuple[str, str] | None:
    if len(text.strip()) < spec.min_chars:
        return "too_short", f"{len(text.strip())} < {spec.min_chars} generated characters"
    if spec.max_chars is not None and len(text) > spec.max_chars:
        return "too_long", f"{len(text)} > {spec.max_chars} generated characters"
    term = blocked_term(text, spec.blocklist)
    if term is not None:
        return "blocked_term", f"blocked_term={term}"
    if spec.max_repetition is not None and quality["repetition"] > spec.max_repetition:
        return "repetitive", f"{quality['repetition']:.2f} of word 3-grams repeat (> {spec.max_repetition})"
    overlap = quality.get("training_overlap")
    if spec.max_training_overlap is not None and overlap is not None and overlap > spec.max_training_overlap:
        return "training_copy", f"{overlap:.2f} of its shingles occur in the training texts (> {spec.max_training_overlap})"
    return None


def verdict(modality: str, quality: dict[str, Any], generated_text: str | None, spec: FilterSpec,
            near_copy_threshold: float | None) -> tuple[str, str] | None:
    """(reason code, detail) of the first filter a row fails, or None when it passes them all (or the filters
    are off). ``near_copy_threshold``: the model's calibrated one, unless ``spec.near_copy_distance`` is set."""
    if not spec.enabled:
        return None
    if modality == "image":
        return _image_verdict(quality, spec, near_copy_threshold)
    return _text_verdict(quality, generated_text or "", spec)
