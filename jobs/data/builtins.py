"""Built-in sources: data that ships inside dependencies, never a download.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), label = the digit.
- ``faces``: scikit-image's 200 LFW 25x25 grayscale crops, labels ``face`` (100) and ``non_face`` (100).
- ``textures``: 600 seeded random 64x64 crops of six scikit-image sample photographs (brick, grass, gravel
  in grayscale; coffee, chelsea, immunohistochemistry in colour), label = the photograph's name.
- ``text-corpus``: the English prose of CPython's ``pydoc_data.topics`` (the language reference help
  texts), one document per paragraph.
"""

from __future__ import annotations

import io
import re
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image


def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    return _png_units(pixels, [f"sklearn.datasets.load_digits[{i}]" for i in range(len(pixels))],
                      [str(int(t)) for t in digits.target])


def _png_units(images: Iterable[np.ndarray], refs: list[str], labels: list[str]) -> pd.DataFrame:
    payload = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        payload.append(buf.getvalue())
    return pd.DataFrame({"input_ref": refs, "modality": "image", "label": labels, "payload": payload, "text": None})


def _faces() -> pd.DataFrame:
    """scikit-image's LFW subset: 100 faces then 100 non-faces, 25x25 grayscale."""
    from skimage.data import lfw_subset

    images = np.clip(np.round(lfw_subset() * 255.0), 0, 255).astype(np.uint8)  # [200, 25, 25] in [0, 1] -> uint8
    labels = ["face" if i < 100 else "non_face" for i in range(len(images))]
    return _png_units(images, [f"skimage.data.lfw_subset[{i}]" for i in range(len(images))], labels)


TEXTURE_PHOTOS = ("brick", "grass", "gravel", "coffee", "chelsea", "immunohistochemistry")
TEXTURE_CROPS, TEXTURE_SIZE = 100, 64


def _textures() -> pd.DataFrame:
    """Seeded random 64x64 crops, 100 from each of six scikit-image sample photographs (label = photo)."""
    import skimage.data

    rng = np.random.default_rng(0)
    images, refs, labels = [], [], []
    for name in TEXTURE_PHOTOS:
        photo = getattr(skimage.data, name)()
        for k in range(TEXTURE_CROPS):
            y, x = (int(rng.integers(0, photo.shape[d] - TEXTURE_SIZE + 1)) for d in (0, 1))
            images.append(np.ascontiguousarray(photo[y:y + TEXTURE_SIZE, x:x + TEXTURE_SIZE]))
            refs.append(f"skimage.data.{name}[{y}:{y + TEXTURE_SIZE},{x}:{x + TEXTURE_SIZE}]#{k}")
            labels.append(name)
    return _png_units(images, refs, labels)


def _text_corpus() -> pd.DataFrame:
    from pydoc_data.topics import topics

    refs, texts = [], []
    for topic in sorted(topics):
        for i, para in enumerate(re.split(r"\n\s*\n", topics[topic])):
            refs.append(f"pydoc_data.topics[{topic}]#{i}")
            texts.append(para)
    return pd.DataFrame({"input_ref": refs, "modality": "text", "label": None, "payload": None, "text": texts})


BUILTINS = {"digits": _digits, "faces": _faces, "textures": _textures, "text-corpus": _text_corpus}
