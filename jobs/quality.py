"""Quality references and filters for generated rows.

``train`` calls ``build_references`` after a model is trained, in a Ray task (on a GPU with ``use_gpu``),
and publishes its output next to the weights: ``quality.safetensors`` (the label classifier of a conditional
image model, the training images' 16x16 pixel features, or a text model's training shingles),
``quality_ids.txt`` (which curated row each reference image is) and a ``quality`` section in the model card
(the classifier's held-out accuracy, the near-copy threshold and how it was calibrated).

Generation's CPU stage holds a ``Scorer`` per actor: it fills each row's ``quality`` struct and ``verdict``
turns scores and ``FilterSpec`` into a reason code or ``None``.

Near-copy calibration: the distance from each held-out (val) real image to its nearest training image is
what "a new image of the same kind" looks like; the threshold is the 1st percentile of those distances, so a
generated image flagged as a near copy is closer to a training image than 99% of unseen real images are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from aigc_models import quality as q

from .cleaning import blocked_term
from .images import decode_png
from .registry import image_shape
from .specs import FilterSpec
from .storage import Store

MAX_REFERENCE_ROWS = 50_000  # reference images/texts kept per model (an even stride through the split)
NEAR_COPY_QUANTILE = 0.01
SHINGLE_K, SHINGLE_MOD = 24, 4


def curated_rows(store: Store, dataset_version: str, split: str, modality: str, sources: list[str] | None,
             columns: list[str]) -> Any:
    if not store.exists("curated", dataset_version, split):
        return None
    filt = pc.field("modality") == modality
    if sources:
        filt &= pc.field("source").isin(sources)
    table = pads.dataset(store.path("curated", dataset_version, split), filesystem=store.fs,
                         format="parquet").to_table(columns=columns, filter=filt)
    stride = max(1, math.ceil(table.num_rows / MAX_REFERENCE_ROWS))
    return table.take(np.arange(0, table.num_rows, stride)) if stride > 1 else table


def decode_images(table: Any) -> np.ndarray:
    return np.stack([decode_png(img["bytes"]) for img in table.column("image").to_pylist()])


def build_references(store_root: str, dataset_version: str, modality: str, sources: list[str] | None,
                     classes: list[str], seed: int, device: str = "cpu") -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, card section) for one model; runs inside a Ray task (see ``build_references_remote``)."""
    store = Store(store_root)
    tensors: dict[str, torch.Tensor] = {}
    card: dict[str, Any] = {"dataset_version": dataset_version}
    files: dict[str, bytes] = {}
    if modality == "image":
        train = curated_rows(store, dataset_version, "train", "image", sources, ["id", "label", "image"])
        val = curated_rows(store, dataset_version, "val", "image", sources, ["label", "image"])
        pixels = decode_images(train)
        features = q.pixel_features(pixels)
        tensors["reference_features"] = torch.from_numpy(features).half()
        files["quality_ids.txt"] = ("\n".join(train.column("id").to_pylist()) + "\n").encode()
        card["reference_images"] = int(len(pixels))
        val_pixels = decode_images(val) if val is not None and val.num_rows else np.zeros((0,) + pixels.shape[1:], np.uint8)
        if len(val_pixels):
            dist, _ = q.nearest(q.pixel_features(val_pixels), features.astype(np.float16).astype(np.float32))
            card["near_copy"] = {"threshold": float(np.quantile(dist, NEAR_COPY_QUANTILE)), "quantile": NEAR_COPY_QUANTILE,
                                 "val_images": int(len(dist)), "val_nearest_median": float(np.median(dist)),
                                 "metric": f"RMS pixel distance in [0, 1] at <= {q.FEATURE_SIDE}x{q.FEATURE_SIDE}"}
        if len(classes) >= 2:
            index = {c: i for i, c in enumerate(classes)}
            labels = train.column("label").to_pylist()
            keep = np.array([l in index for l in labels])
            y = np.array([index.get(l, -1) for l in labels])
            clf = q.train_classifier(pixels[keep], y[keep], len(classes), seed=seed, device=device)
            tensors.update({f"classifier.{k}": v.detach().cpu() for k, v in clf.state_dict().items()})
            accuracy = None
            if len(val_pixels):
                val_y = np.array([index.get(l, -1) for l in val.column("label").to_pylist()])
                pred = q.class_probabilities(clf, val_pixels).argmax(axis=1)
                accuracy = float((pred == val_y).mean())
            card["classifier"] = {"classes": classes, "width": clf.width, "train_images": int(keep.sum()),
                                  "val_accuracy": accuracy}
    else:
        train = curated_rows(store, dataset_version, "train", "text", sources, ["text"])
        texts = [t for t in train.column("text").to_pylist() if t]
        ref = q.reference_shingles(texts, SHINGLE_K, SHINGLE_MOD)
        tensors["reference_shingles"] = torch.from_numpy(ref.view(np.int64).copy())
        card["text"] = {"reference_texts": len(texts), "shingles": int(len(ref)), "k": SHINGLE_K, "mod": SHINGLE_MOD}
    files["quality.safetensors"] = save_tensors({k: v.contiguous() for k, v in tensors.items()})
    return files, card


build_references_remote = ray.remote(num_cpus=1)(build_references)


class Scorer:
    """One model's references, loaded once per actor: fills the ``quality`` struct of its rows."""

    def __init__(self, store: Store, model_path: str, card: dict[str, Any]) -> None:
        self.card = card.get("quality") or {}
        self.classifier = None
        self.features = self.ids = self.shingles = None
        if not self.card or not store.exists(model_path, "quality.safetensors"):
            return  # a model registered before quality references existed: plain scores only
        tensors = load_tensors(store.read_bytes(model_path, "quality.safetensors"))
        if "reference_features" in tensors:
            self.features = tensors["reference_features"].float().numpy()
            self.ids = store.read_bytes(model_path, "quality_ids.txt").decode().split("\n")
        if "reference_shingles" in tensors:
            self.shingles = tensors["reference_shingles"].numpy().view(np.uint64)
        if "classifier" in self.card:
            c = self.card["classifier"]
            h, _, ch = image_shape(card)  # the classifier was trained on the curated images, which have it
            self.classifier = q.DomainClassifier(ch, h, len(c["classes"]), c["width"])
            self.classifier.load_state_dict({k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")})
            self.classifier.eval()
            self.classes = {name: i for i, name in enumerate(c["classes"])}

    @property
    def near_copy_threshold(self) -> float | None:
        return (self.card.get("near_copy") or {}).get("threshold")

    def images(self, pixels: np.ndarray, labels: list[str | None]) -> list[dict[str, Any]]:
        gray = pixels.astype(np.float64).mean(axis=3)
        border = np.concatenate([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], axis=1).mean(axis=1)
        out = [{"contrast": float(g.std() / 127.5), "ink": float((np.abs(g - b) > 64).mean())} for g, b in zip(gray, border)]
        if self.features is not None:
            dist, idx = q.nearest(q.pixel_features(pixels), self.features)
            for o, d, i in zip(out, dist, idx):
                o["nearest_train_distance"], o["nearest_train_id"] = float(d), self.ids[i] if i >= 0 else None
        if self.classifier is not None:
            probs = q.class_probabilities(self.classifier, pixels)
            names = list(self.classes)
            for o, p, label in zip(out, probs, labels):
                o["predicted_label"] = names[int(p.argmax())]
                o["label_confidence"] = float(p[self.classes[label]]) if label in self.classes else None
        return out

    def text(self, generated: str) -> dict[str, Any]:
        data = generated.encode()
        bigrams = [data[i:i + 2] for i in range(len(data) - 1)]
        out = {"distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0, "length": len(generated),
               "repetition": q.repetition(generated)}
        if self.shingles is not None:
            out["training_overlap"] = q.overlap(generated, self.shingles, SHINGLE_K, SHINGLE_MOD)
        return out


def verdict(modality: str, quality: dict[str, Any], generated_text: str | None, spec: FilterSpec,
            near_copy_threshold: float | None) -> tuple[str, str] | None:
    """(reason code, detail) of the first filter a row fails, or None when it passes them all."""
    if not spec.enabled:
        return None
    if modality == "image":
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
    text = generated_text or ""
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

