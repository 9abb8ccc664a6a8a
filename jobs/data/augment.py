"""Offline image augmentation: deterministic random transforms of a ``uint8 [H, W, C]`` array.

Each copy draws from its own generator seeded by (row id, copy index, seed), so re-running preprocessing
gives the same augmented rows and the dataset version stays a pure function of inputs and settings.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageEnhance

from jobs.data.spec import AugmentSpec
from jobs.store.png import to_pil


def copy_id(row_id: str, k: int) -> str:
    return hashlib.sha256(f"{row_id}|aug|{k}".encode()).hexdigest()[:20]


def augment(arr: np.ndarray, spec: AugmentSpec, row_id: str, k: int, background: int) -> np.ndarray:
    seed = int(hashlib.sha256(f"{spec.seed}|{row_id}|{k}".encode()).hexdigest()[:16], 16)
    rng = np.random.default_rng(seed)
    im = to_pil(arr)
    size = im.size
    if spec.hflip and rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if spec.rotate_degrees:
        fill = background if im.mode == "L" else (background,) * 3
        im = im.rotate(float(rng.uniform(-spec.rotate_degrees, spec.rotate_degrees)), Image.BILINEAR, fillcolor=fill)
    if spec.crop_scale < 1:
        side = np.sqrt(rng.uniform(spec.crop_scale, 1.0))
        w, h = max(1, round(size[0] * side)), max(1, round(size[1] * side))
        left, top = int(rng.integers(0, size[0] - w + 1)), int(rng.integers(0, size[1] - h + 1))
        im = im.crop((left, top, left + w, top + h)).resize(size, Image.BICUBIC)
    if spec.color_jitter:
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(1 - spec.color_jitter, 1 + spec.color_jitter)))
        im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(1 - spec.color_jitter, 1 + spec.color_jitter)))
    out = np.asarray(im, dtype=np.float64)
    if spec.noise_std:
        out = out + rng.normal(0, spec.noise_std, out.shape)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out[:, :, None] if out.ndim == 2 else out
