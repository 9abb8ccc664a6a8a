"""PNG encoding and decoding, with the AI-content label inside every generated image.

Generated PNGs carry their provenance label (``jobs.store.provenance.png_info``: ``tEXt`` chunks ``ai_generated`` and
``provenance``, and an XMP packet with the IPTC digital source type), so a file pulled out of the table is still
machine-readably marked as AI-generated.

A signed image also carries its C2PA manifest in a ``caBX`` chunk (``jobs.store.credentials``); ``without_c2pa``
takes it out again, leaving the labelled PNG byte for byte.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
from PIL import Image

from jobs.store.provenance import png_info

MODES = {1: "L", 3: "RGB"}


def to_pil(array: np.ndarray) -> Image.Image:
    """``uint8 [H, W, C]`` with C in (1, 3) -> PIL image in mode L or RGB."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in MODES:
        raise ValueError(f"expected uint8 [H, W, 1|3], got {array.dtype} {array.shape}")
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, mode=MODES[array.shape[2]])


def encode_png(array: np.ndarray, provenance: dict[str, Any] | None = None) -> bytes:
    """``uint8 [H, W, 1|3]`` -> PNG bytes, labelled with ``provenance`` when given. Deterministic: the same
    pixels and label give the same bytes."""
    info = None if provenance is None else png_info(provenance)
    buf = io.BytesIO()
    to_pil(array).save(buf, format="PNG", pnginfo=info, optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``uint8 [H, W, C]`` (C = 1 for L, 3 for RGB)."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
    return arr[:, :, None] if arr.ndim == 2 else arr


C2PA_CHUNK = b"caBX"


def chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """``(type, start, end)`` of each chunk of a PNG (``ValueError`` when it is not one, or is cut short)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file")
    out, at = [], 8
    while at < len(data):
        if at + 12 > len(data):
            raise ValueError("the PNG is cut short")
        (length,) = struct.unpack(">I", data[at:at + 4])
        out.append((data[at + 4:at + 8], at, at + 12 + length))
        at += 12 + length
    if at != len(data):
        raise ValueError("the PNG is cut short")
    return out


def without_c2pa(data: bytes) -> bytes:
    """The PNG with its C2PA manifest chunk removed: for a signed row, exactly what ``encode_png`` made."""
    return data[:8] + b"".join(data[s:e] for kind, s, e in chunks(data) if kind != C2PA_CHUNK)


def has_c2pa(data: bytes) -> bool:
    return any(kind == C2PA_CHUNK for kind, _, _ in chunks(data))
