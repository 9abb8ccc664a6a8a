"""Readers of the configured sources, each yielding raw input units as a DataFrame.

Raw columns: ``source``, ``input_ref`` (where the unit came from, for people), ``modality``, ``label``,
``payload`` (encoded image bytes, or None) and ``text`` (or None). One row per input unit: every unit is
later accepted or rejected, never dropped, so the accounting in the manifest adds up.

Built-ins use data that ships inside dependencies, never a download:
- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), label = the digit.
- ``text-corpus``: the English prose of CPython's ``pydoc_data.topics`` (the language reference help
  texts), one document per paragraph.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
from PIL import Image

from .specs import BuiltinSource, Source

RAW_COLUMNS = ["source", "input_ref", "modality", "label", "payload", "text"]


def read_source(source: Source) -> pd.DataFrame:
    readers = {"digits": _digits, "text-corpus": _text_corpus}
    df = readers[source.name]()
    if source.limit is not None:
        df = df.iloc[: source.limit]
    df.insert(0, "source", source.source_id)
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
