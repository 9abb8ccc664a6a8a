"""Pictures for people: sample grids and line charts, stored beside model versions and drawn into reports.

One line chart, two outputs: ``Chart`` lays out the axes once (non-finite values skipped, a flat series given
some height), ``line_chart_png`` draws it with PIL (``loss_curve.png`` in the registry: no plotting dependency)
and ``line_chart_svg`` as inline SVG (the nightly report, which must open offline).
"""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from jobs.store.png import to_pil

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


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


def finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass
class Chart:
    """The layout of a line chart of ``series`` over ``xs`` in a ``size`` box: pixel positions of every finite
    point, the y ticks (bottom, middle, top) and the first and last x."""

    xs: Sequence[float]
    series: dict[str, Sequence[Any]]
    size: tuple[int, int]
    margins: tuple[int, int, int, int]  # left, right, top, bottom

    def __post_init__(self) -> None:
        self.lines = {n: [(float(x), float(y)) for x, y in zip(self.xs, ys) if finite(y)] for n, ys in self.series.items()}
        values = [y for pts in self.lines.values() for _, y in pts]
        self.empty = not values
        if self.empty:
            return
        xs = sorted({x for pts in self.lines.values() for x, _ in pts})
        self.x_ends = [xs[0], xs[-1]] if len(xs) > 1 else [xs[0]]
        x0, x1 = xs[0], xs[-1]
        self.x0, self.x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0, x1)
        y0, y1 = min(values), max(values)
        self.y0, self.y1 = (y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)) if y0 == y1 else (y0, y1)
        self.y_ticks = [self.y0 + f * (self.y1 - self.y0) for f in (0, 0.5, 1)]

    def px(self, x: float) -> float:
        left, right, _, _ = self.margins
        return left + (x - self.x0) / (self.x1 - self.x0) * (self.size[0] - left - right)

    def py(self, y: float) -> float:
        _, _, top, bottom = self.margins
        return self.size[1] - bottom - (y - self.y0) / (self.y1 - self.y0) * (self.size[1] - top - bottom)

    def points(self, name: str) -> list[tuple[float, float]]:
        return [(self.px(x), self.py(y)) for x, y in self.lines[name]]


def line_chart_png(xs: Sequence[float], series: dict[str, Sequence[Any]], title: str,
                   size: tuple[int, int] = (640, 360)) -> Image.Image:
    """The chart as a PIL image: one line per series, shared axes, a legend."""
    chart = Chart(xs, series, size, (60, 20, 30, 40))
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    if chart.empty:
        draw.text((60, height // 2), f"{title}: no data", fill="black")
        return img
    draw.rectangle([60, 30, width - 20, height - 40], outline=(160, 160, 160))
    for yv in chart.y_ticks:
        draw.text((4, chart.py(yv) - 6), f"{yv:.3g}", fill="black")
    for xv in chart.x_ends:
        draw.text((chart.px(xv) - 10, height - 40 + 6), f"{xv:.0f}", fill="black")
    draw.text((60, 8), title, fill="black")
    for i, name in enumerate(chart.lines):
        colour, points = COLOURS[i % len(COLOURS)], chart.points(name)
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        draw.text((width - 20 - 150, 30 + 6 + 14 * i), f"— {name}", fill=colour)
    return img


def line_chart_svg(xs: Sequence[float], series: dict[str, Sequence[Any]], title: str, key: str = "",
                   x_labels: dict[float, str] | None = None, markers: bool = True,
                   size: tuple[int, int] = (520, 220)) -> str:
    """The chart as inline SVG: a polyline per series, a dot per point when ``markers``, three y ticks, x ticks
    at the ends (``x_labels`` names x positions, e.g. dates)."""
    (width, height), (left, right, top, bottom), e = size, (58, 12, 26, 34), html.escape
    chart = Chart(xs, series, size, (left, right, top, bottom))
    head = f'<svg width="{width}" height="{height}" data-chart="{e(key)}">' \
           f'<rect width="{width}" height="{height}" fill="#fff"/><text x="{left}" y="16" font-size="13">{e(title)}</text>'
    if chart.empty:
        return head + f'<text x="{left}" y="{height // 2}" font-size="12">no data</text></svg>'
    out = [head, f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
                 'fill="none" stroke="#bbb"/>']
    out += [f'<text x="{left - 4}" y="{chart.py(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.4g}</text>'
            for yv in chart.y_ticks]
    anchors = ["start", "end"] if len(chart.x_ends) > 1 else ["middle"]
    for xv, anchor in zip(chart.x_ends, anchors):  # the first and last x, kept inside the chart
        label = (x_labels or {}).get(xv, f"{xv:.0f}")
        out.append(f'<text x="{chart.px(xv):.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="{anchor}">'
                   f'{e(label)}</text>')
    for i, name in enumerate(chart.lines):
        colour, points = "rgb({},{},{})".format(*COLOURS[i % len(COLOURS)]), chart.points(name)
        if len(points) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if markers or len(points) == 1:
            out += [f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in points]
        if len(chart.lines) > 1:
            out.append(f'<text x="{width - right - 140}" y="{top + 14 + 14 * i}" font-size="11" fill="{colour}">'
                       f'— {e(name)}</text>')
    return "".join(out) + "</svg>"


def bar_chart_svg(items: list[tuple[str, Any]], title: str, unit: str = "s", width: int = 720) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    e, bar_h, left = html.escape, 20, 170
    items = [(name, float(v)) for name, v in items if finite(v)]
    height = 30 + bar_h * len(items) + 10
    top = max((v for _, v in items), default=0) or 1
    out = [f'<svg width="{width}" height="{height}" data-chart="{e(title)}">'
           f'<rect width="{width}" height="{height}" fill="#fff"/><text x="4" y="16" font-size="13">{e(title)}</text>']
    for i, (name, v) in enumerate(items):
        y, w = 26 + i * bar_h, v / top * (width - left - 90)
        out.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">{e(name)}</text>'
                   f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="rgb(31,119,180)"/>'
                   f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="11">{v:.3g} {e(unit)}</text>')
    return "".join(out) + "</svg>"
