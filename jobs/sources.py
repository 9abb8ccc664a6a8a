"""Readers of the configured sources, each yielding raw input units as a DataFrame.

Raw columns: ``source``, ``input_ref`` (where the unit came from, for people), ``modality``, ``label``,
``payload`` (encoded image bytes, or None) and ``text`` (or None). One row per input unit: every unit is
later accepted or rejected, never dropped, so the accounting in the manifest adds up.

Images are read lazily: a unit carries its ``path`` and the cleaning task (on Ray) reads the bytes, so
the driver only lists files. Every file met is a unit: one that is not an image becomes a reject.

Built-ins use data that ships inside dependencies, never a download:
- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), label = the digit.
- ``text-corpus``: the English prose of CPython's ``pydoc_data.topics`` (the language reference help
  texts), one document per paragraph.
"""

from __future__ import annotations

import glob
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .specs import ImageFolderSource, Source, TextFilesSource

RAW_COLUMNS = ["source", "input_ref", "modality", "label", "payload", "text", "path"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def read_source(source: Source) -> pd.DataFrame:
    if isinstance(source, ImageFolderSource):
        df = _image_folder(source)
    elif isinstance(source, TextFilesSource):
        df = _text_files(source)
    else:
        df = {"digits": _digits, "text-corpus": _text_corpus}[source.name]()
    for col in RAW_COLUMNS:
        if col not in df:
            df[col] = None
    df["source"] = source.source_id
    if source.limit is not None:
        df = df.iloc[: source.limit]
    return df[RAW_COLUMNS].reset_index(drop=True)


def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    payload = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        payload.append(buf.getvalue())
    return pd.DataFrame({
        "input_ref": [f"sklearn.datasets.load_digits[{i}]" for i in range(len(pixels))],
        "modality": "image",
        "label": [str(int(t)) for t in digits.target],
        "payload": payload,
        "text": None,
    })


def _text_corpus() -> pd.DataFrame:
    from pydoc_data.topics import topics

    refs, texts = [], []
    for topic in sorted(topics):
        for i, para in enumerate(re.split(r"\n\s*\n", topics[topic])):
            refs.append(f"pydoc_data.topics[{topic}]#{i}")
            texts.append(para)
    return pd.DataFrame({"input_ref": refs, "modality": "text", "label": None, "payload": None, "text": texts})


def _image_folder(source: ImageFolderSource) -> pd.DataFrame:
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder source: {root} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    nested = any(f.parent != root for f in files)
    by_folder = source.labels == "folders" or (source.labels == "auto" and nested)
    rows = []
    for f in files:
        rel = f.relative_to(root)
        rows.append({"input_ref": str(rel), "modality": "image", "path": str(f),
                     "label": rel.parts[0] if by_folder and len(rel.parts) > 1 else None,
                     "payload": None if f.suffix.lower() in IMAGE_SUFFIXES else b""})
    return pd.DataFrame(rows, columns=["input_ref", "modality", "label", "payload", "path"])


def _text_files(source: TextFilesSource) -> pd.DataFrame:
    paths = sorted(glob.glob(os.path.expanduser(source.path), recursive=True))
    if not paths:
        raise FileNotFoundError(f"text_files source: no file matches {source.path}")
    refs, texts = [], []
    for p in paths:
        data = Path(p).read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")  # every byte sequence decodes; the common legacy encoding
        units = [text] if source.per == "file" else text.splitlines()
        refs += [p] if source.per == "file" else [f"{p}:{i + 1}" for i in range(len(units))]
        texts += units
    return pd.DataFrame({"input_ref": refs, "modality": "text", "label": None, "payload": None, "text": texts})
