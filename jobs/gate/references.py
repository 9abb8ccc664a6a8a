"""A model's quality references: what its output is compared with, row by row (``jobs.generate.filters``) and as a
set (``jobs.gate.figures``).

Training builds them right after a model is trained (``build_references``, a Ray task on the same kind of device)
and registers them beside the weights: ``quality.safetensors`` (the label classifier of a conditional image
model, the training images' 16x16 pixel features, or a text model's training shingles), ``quality_ids.txt``
(which curated row each reference image is) and the card's ``quality`` section (the classifier's held-out
accuracy, the near-copy threshold and how it was calibrated). ``References.load`` reads them back, once per
actor or task.

Near-copy calibration: the distance from each held-out (val) real image to its nearest training image is what
"a new image of the same kind" looks like; the threshold is the 1st percentile of those distances, so a generated
image flagged as a near copy is closer to a training image than 99% of unseen real images are.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import ray
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from aigc_models import quality as q
from jobs.data.curated import curated_rows, decode_images
from jobs.store.registry import ModelRef
from jobs.store.storage import Store

NEAR_COPY_QUANTILE = 0.01
SHINGLE_K, SHINGLE_MOD = 24, 4


def _image_references(store: Store, dataset_version: str, sources: list[str] | None, classes: list[str], seed: int,
                      device: str) -> tuple[dict[str, torch.Tensor], dict[str, bytes], dict[str, Any]]:
    train = curated_rows(store, dataset_version, "train", "image", sources, ["id", "label", "image"])
    val = curated_rows(store, dataset_version, "val", "image", sources, ["label", "image"])
    pixels = decode_images(train)
    features = q.pixel_features(pixels)
    tensors = {"reference_features": torch.from_numpy(features).half()}
    files = {"quality_ids.txt": ("\n".join(train.column("id").to_pylist()) + "\n").encode()}
    card: dict[str, Any] = {"reference_images": int(len(pixels))}
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
            accuracy = float((q.class_probabilities(clf, val_pixels).argmax(axis=1) == val_y).mean())
        card["classifier"] = {"classes": classes, "width": clf.width, "train_images": int(keep.sum()),
                              "val_accuracy": accuracy}
    return tensors, files, card


def build_references(store_root: str, dataset_version: str, modality: str, sources: list[str] | None,
                     classes: list[str], seed: int, device: str = "cpu") -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, card section) for one model; runs inside a Ray task (see ``build_references_remote``)."""
    started = time.time()
    store = Store(store_root)
    if modality == "image":
        tensors, files, card = _image_references(store, dataset_version, sources, classes, seed, device)
    else:
        train = curated_rows(store, dataset_version, "train", "text", sources, ["text"])
        texts = [t for t in train.column("text").to_pylist() if t]
        ref = q.reference_shingles(texts, SHINGLE_K, SHINGLE_MOD)
        tensors, files = {"reference_shingles": torch.from_numpy(ref.view(np.int64).copy())}, {}
        card = {"text": {"reference_texts": len(texts), "shingles": int(len(ref)), "k": SHINGLE_K, "mod": SHINGLE_MOD}}
    files["quality.safetensors"] = save_tensors({k: v.contiguous() for k, v in tensors.items()})
    return files, {"dataset_version": dataset_version, **card, "seconds": round(time.time() - started, 2)}


build_references_remote = ray.remote(num_cpus=1)(build_references)


@dataclasses.dataclass
class References:
    """One model's references as loaded from its version folder; every part is None (or empty) for a model
    registered without them (``train.quality_references: false``, or a version older than references)."""

    classifier: q.DomainClassifier | None = None
    classes: dict[str, int] = dataclasses.field(default_factory=dict)  # label -> classifier output index
    features: np.ndarray | None = None  # [N, F] training images' pixel features
    ids: list[str] | None = None  # curated id of each feature row
    shingles: np.ndarray | None = None  # uint64 hashes of the training texts' shingles
    near_copy_threshold: float | None = None

    @classmethod
    def load(cls, store: Store, ref: ModelRef) -> "References":
        section = ref.card.quality or {}
        if not section or not store.exists(ref.path, "quality.safetensors"):
            return cls()
        tensors = load_tensors(store.read_bytes(ref.path, "quality.safetensors"))
        out = cls(near_copy_threshold=(section.get("near_copy") or {}).get("threshold"))
        if "reference_features" in tensors:
            out.features = tensors["reference_features"].float().numpy()
            out.ids = store.read_bytes(ref.path, "quality_ids.txt").decode().split("\n")
        if "reference_shingles" in tensors:
            out.shingles = tensors["reference_shingles"].numpy().view(np.uint64)
        if "classifier" in section:
            c = section["classifier"]
            h, _, ch = ref.card.image_shape  # the classifier was trained on the curated images, which have it
            out.classifier = q.DomainClassifier(ch, h, len(c["classes"]), c["width"])
            out.classifier.load_state_dict({k[len("classifier."):]: v for k, v in tensors.items()
                                            if k.startswith("classifier.")})
            out.classifier.eval()
            out.classes = {name: i for i, name in enumerate(c["classes"])}
        return out

    def text_overlap(self, text: str) -> float | None:
        """Share of ``text``'s shingles found in the training texts (None without text references)."""
        return None if self.shingles is None else q.overlap(text, self.shingles, SHINGLE_K, SHINGLE_MOD)
