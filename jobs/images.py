"""PNG encoding and decoding with the AI-content label, and sample grids.

Generated PNGs carry their provenance label (``jobs.provenance.png_info``: ``tEXt`` chunks ``ai_generated`` and
``provenance``, and an XMP packet with the IPTC digital source type), so a file pulled out of the table is still
machine-readably marked as AI-generated.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .provenance import png_info

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


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_chart(x: Sequence[float], series: dict[str, Sequence[float]], title: str,
               size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A small line chart (one line per series, shared axes, a legend) drawn with PIL alone: loss curves
    in the model registry without a plotting dependency."""
    from PIL import ImageDraw

    width, height = size
    left, right, top, bottom = 60, 20, 30, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    values = [float(v) for ys in series.values() for v in ys if np.isfinite(v)]
    if not len(x) or not values:
        draw.text((left, height // 2), f"{title}: no data", fill="black")
        return img
    x0, x1 = float(min(x)), float(max(x)) if max(x) > min(x) else float(min(x)) + 1
    y0, y1 = min(values), max(values) if max(values) > min(values) else min(values) + 1
    px = lambda v: left + (float(v) - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    py = lambda v: height - bottom - (float(v) - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    draw.rectangle([left, top, width - right, height - bottom], outline=(160, 160, 160))
    for frac in (0, 0.5, 1):
        yv, xv = y0 + frac * (y1 - y0), x0 + frac * (x1 - x0)
        draw.text((4, py(yv) - 6), f"{yv:.3g}", fill="black")
        draw.text((px(xv) - 10, height - bottom + 6), f"{xv:.0f}", fill="black")
    draw.text((left, 8), title, fill="black")
    for i, (name, ys) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [(px(a), py(b)) for a, b in zip(x, ys) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points[:1] if len(points) == 1 else []:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        draw.text((width - right - 150, top + 6 + 14 * i), f"— {name}", fill=colour)
    return img
