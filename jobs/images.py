"""PNG encoding and decoding with the AI-content label, and sample grids.

Generated PNGs carry their provenance in ``tEXt`` chunks (``ai_generated``, ``provenance``), so a file
pulled out of the table is still machine-readably marked as AI-generated.
"""

from __future__ import annotations

import io
import json
from typing import Any, Sequence

import numpy as np
from PIL import Image, PngImagePlugin

MODES = {1: "L", 3: "RGB"}


def to_pil(array: np.ndarray) -> Image.Image:
    """``uint8 [H, W, C]`` with C in (1, 3) -> PIL image in mode L or RGB."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in MODES:
        raise ValueError(f"expected uint8 [H, W, 1|3], got {array.dtype} {array.shape}")
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, mode=MODES[array.shape[2]])


def encode_png(array: np.ndarray, provenance: dict[str, Any] | None = None) -> bytes:
    info = None
    if provenance is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("ai_generated", "true")
        info.add_text("provenance", json.dumps(provenance, sort_keys=True))
    buf = io.BytesIO()
    to_pil(array).save(buf, format="PNG", pnginfo=info, optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``uint8 [H, W, C]`` (C = 1 for L, 3 for RGB)."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def grid(images: Sequence[np.ndarray], ncol: int, pad: int = 2, scale: int = 2) -> Image.Image:
    """Tiles equal-sized ``uint8 [H, W, C]`` images row by row (``ncol`` per row) on a white background."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w, c = images[0].shape
    nrow = -(-len(images) // ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = img
    out = to_pil(canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out
