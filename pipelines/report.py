"""The nightly report: one self-contained HTML page per night, and its headline figures for Prefect.

``write_report`` writes ``ROOT/reports/run_date=D/index.html`` (inline CSS, PNGs as ``data:`` URIs, charts as
inline SVG: it opens offline and references nothing outside itself) and ``report.json`` (the night dict, which
later nights read for their trend charts). ``headline`` gives the same headline figures as markdown and table rows
for Prefect artifacts. Any key of the night dict may be missing or None (a failed night): what is missing is
left out of the page, never an error.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import date
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from PIL import Image

from jobs.images import COLOURS, decode_png, grid
from jobs.storage import Store

IMAGES_PER_LABEL = 8
TEXTS_PER_PROMPT = 5
CELLS_PER_MODEL = 50  # labels or prompts shown per model; a model with more shows its first 50
LIFT = "augmentation_lift"
CONDITION_COLUMNS = ["modality", "model_name", "label", "prompt"]

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1150px;color:#222;background:#fff}
h1{margin:0 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 12px;border-radius:12px;color:#fff;font-weight:bold;text-transform:uppercase}
.ok{background:#2c9f2c}.bad{background:#d62728}.unknown{background:#888}.pass{color:#2c9f2c}.fail{color:#d62728}
.charts{display:flex;flex-wrap:wrap;gap:12px}pre{white-space:pre-wrap;margin:0;font-size:13px}
.sample{margin:2px 0;padding:4px 8px;background:#f8f8f8;border-left:3px solid #1f77b4}img{image-rendering:pixelated}
"""


def write_report(store: Store, night: dict[str, Any], rows_path: str | None) -> str:
    """Writes ROOT/reports/run_date=<D>/index.html and report.json (the night dict, for later trends);
    returns store.display() of index.html. ``rows_path``: a store path of a folder of generated Parquet rows
    (the published partition, or staging on a refused night) to take samples from, or None."""
    if not _is_date(night.get("run_date")):  # a night that failed before it had a date: file it under today
        night = {**night, "run_date": date.today().isoformat()}
    run_date = night["run_date"]
    folder = f"reports/run_date={run_date}"
    nights = [*_earlier_nights(store, run_date), night]
    images, texts, unreadable = {}, {}, None
    try:
        images, texts = _samples(store, rows_path) if rows_path else ({}, {})
    except (OSError, ValueError) as exc:  # a damaged file costs the night its samples, not its report
        unreadable = f"samples not shown: {exc}"
    page = _page(night, nights, images, texts, _loss_curves(store, night), unreadable)
    store.write_json(night, folder, "report.json")
    store.write_bytes(page.encode(), folder, "index.html")
    return store.display(folder, "index.html")


def headline(night: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, table rows) for Prefect artifacts: status/reason, rows, rejects, and per model and metric
    {model, metric, value, baseline, bound, passed}. Rows follow ``gate.checks``; figures no check covers
    (and the augmentation lift) follow with bound and passed None."""
    rows = _headline_rows(night)
    gen, pre = night.get("generate") or {}, _get(night, "preprocess", "counts") or {}
    lines = [f"## {night.get('name') or 'nightly'} · {night.get('run_date') or '?'}: "
             f"status **{night.get('status') or 'unknown'}**"]
    if night.get("reason"):
        lines.append(f"\nreason: {night['reason']}")
    lines.append(f"\ngenerated rows {_fmt(gen.get('rows'))}, rejected {_fmt(gen.get('rejected'))}"
                 f"{_reasons(gen.get('rejected_by_reason'))}; preprocess inputs {_fmt(pre.get('inputs'))}, "
                 f"accepted {_fmt(pre.get('accepted'))}, rejected {_fmt(pre.get('rejected'))}"
                 f"{_reasons(pre.get('by_reason'))}")
    if rows:
        lines += ["", "| model | metric | value | baseline | bound | passed |", "|---|---|---|---|---|---|"]
        lines += [f"| {' | '.join(_fmt(r[k]).replace('|', '/') for k in ('model', 'metric', 'value', 'baseline', 'bound'))}"
                  f" | {'–' if r['passed'] is None else 'yes' if r['passed'] else '**no**'} |" for r in rows]
    lines.append(f"\nreport: `reports/run_date={night.get('run_date')}/index.html` under the output root")
    return "\n".join(lines) + "\n", rows


# ---- reading ----------------------------------------------------------------------------------------------------

def _earlier_nights(store: Store, run_date: str) -> list[dict[str, Any]]:
    """The report.json of every night before ``run_date`` under ROOT, oldest first; unreadable ones are skipped."""
    out = []
    for name in store.listdir("reports"):
        d = name.partition("run_date=")[2]
        if d and d < run_date and store.exists("reports", name, "report.json"):
            try:
                out.append(store.read_json("reports", name, "report.json"))
            except (OSError, ValueError):
                continue
    return out


def _samples(store: Store, rows_path: str) -> tuple[dict[str, dict[str, list[bytes]]], dict[str, dict[str, list[str]]]]:
    """A few PNGs per (image model, label) and texts per (text model, prompt), in file order. Reads the small
    condition columns one row group at a time, and the image/text column only of row groups holding a pick."""
    images: dict[str, dict[str, list[bytes]]] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    base = store.path(rows_path)
    files = [f for f in store.files(rows_path, suffix=".parquet")  # not staging's _rejected/ nor half-written files
             if ".tmp-" not in f and not any(p[:1] in "_." for p in f[len(base) + 1:].split("/"))]
    if not files:
        return images, texts
    dataset = pads.dataset(files, format="parquet", filesystem=store.fs)
    if not {"modality", "model_name"} <= set(dataset.schema.names):
        return images, texts
    names = set(dataset.schema.names)
    for fragment in dataset.get_fragments():
        for piece in fragment.split_by_row_group():
            df = piece.to_table(columns=[c for c in CONDITION_COLUMNS if c in names]).to_pandas()
            df = df.reindex(columns=CONDITION_COLUMNS)
            df["condition"] = df["prompt"].where(df["modality"] == "text", df["label"])
            firsts = df.groupby(["modality", "model_name", "condition"], dropna=False, sort=False).head(IMAGES_PER_LABEL)
            picks: dict[str, list[tuple[int, list]]] = {"image": [], "text": []}
            for i, kind, model, condition in firsts[["modality", "model_name", "condition"]].itertuples():
                if kind not in picks or not isinstance(model, str):
                    continue
                cells = (images if kind == "image" else texts).setdefault(model, {})
                key = condition if isinstance(condition, str) else "(none)"
                if key not in cells and len(cells) >= CELLS_PER_MODEL:
                    continue
                cell = cells.setdefault(key, [])
                pending = sum(c is cell for _, c in picks[kind])
                if len(cell) + pending < (IMAGES_PER_LABEL if kind == "image" else TEXTS_PER_PROMPT):
                    picks[kind].append((i, cell))
            for kind, wanted in picks.items():
                if wanted and kind in names:  # only now read this row group's image or text column
                    column = piece.to_table(columns=[kind]).column(0).take([i for i, _ in wanted]).to_pylist()
                    for (_, cell), value in zip(wanted, column):
                        content = (value or {}).get("bytes") if kind == "image" else value
                        if content:
                            cell.append(content)
    return images, texts


def _loss_curves(store: Store, night: dict[str, Any]) -> dict[str, tuple[str, pd.DataFrame]]:
    """Per model: (version, metrics.parquet) of tonight's candidate if one was trained, else of the production
    version. Models without a readable metrics file are left out."""
    out = {}
    for m in night.get("models") or []:
        version = m.get("candidate") or m.get("version")
        if not (m.get("name") and version and store.exists("models", m["name"], version, "metrics.parquet")):
            continue
        try:
            out[m["name"]] = (version, pd.read_parquet(io.BytesIO(store.read_bytes("models", m["name"], version,
                                                                                  "metrics.parquet"))))
        except (OSError, ValueError):
            continue
    return out


# ---- figures ----------------------------------------------------------------------------------------------------

def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _figures(night: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{model: {metric: value}}: the gate's figures (the models' evaluations when there was no gate) and the
    augmentation lift."""
    figures = {m["name"]: dict(m["evaluation"]) for m in night.get("models") or [] if m.get("name") and m.get("evaluation")}
    for model, values in (_get(night, "gate", "figures") or {}).items():
        figures.setdefault(model, {}).update(values or {})
    for model, lift in (night.get("augmentation_lift") or {}).items():
        if isinstance(lift, dict) and lift.get("lift") is not None:
            figures.setdefault(model, {})[LIFT] = lift["lift"]
    return figures


def _headline_rows(night: dict[str, Any]) -> list[dict[str, Any]]:
    baseline = _get(night, "gate", "baseline") or {}
    rows = [{"model": c.get("model"), "metric": c.get("metric"), "value": c.get("value"),
             "baseline": _get(baseline, c.get("model"), "figures", c.get("metric")) if c.get("model") else None,
             "bound": c.get("bound"), "passed": c.get("passed")} for c in _get(night, "gate", "checks") or []]
    checked = {(r["model"], r["metric"]) for r in rows}
    for model, values in _figures(night).items():
        rows += [{"model": model, "metric": metric, "value": v, "baseline": _get(baseline, model, "figures", metric),
                  "bound": None, "passed": None} for metric, v in values.items() if (model, metric) not in checked]
    return rows


def _is_date(v: Any) -> bool:
    try:
        return bool(date.fromisoformat(v))
    except (TypeError, ValueError):
        return False


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _reasons(by_reason: dict[str, int] | None) -> str:
    return f" ({', '.join(f'{k} {_fmt(v)}' for k, v in by_reason.items())})" if by_reason else ""


# ---- SVG charts -------------------------------------------------------------------------------------------------

def line_chart_svg(xs: list[float], series: dict[str, list[Any]], title: str, key: str = "",
                   x_labels: dict[float, str] | None = None, markers: bool = True,
                   size: tuple[int, int] = (520, 220)) -> str:
    """An inline SVG line chart: one polyline per series (non-finite values skipped), a dot per point when
    ``markers``, three y ticks, x ticks at the ends (``x_labels`` names x positions, e.g. dates)."""
    width, height = size
    left, right, top, bottom = 58, 12, 26, 34
    e = html.escape
    head = f'<svg width="{width}" height="{height}" data-chart="{e(key)}">' \
           f'<rect width="{width}" height="{height}" fill="#fff"/><text x="{left}" y="16" font-size="13">{e(title)}</text>'
    lines = {n: [(float(x), float(y)) for x, y in zip(xs, ys) if _finite(y)] for n, ys in series.items()}
    values = [y for pts in lines.values() for _, y in pts]
    if not values:
        return head + f'<text x="{left}" y="{height // 2}" font-size="12">no data</text></svg>'
    px_all = [x for pts in lines.values() for x, _ in pts]
    x0, x1 = min(px_all), max(px_all)
    x0, x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0, x1)
    y0, y1 = min(values), max(values)
    y0, y1 = (y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)) if y0 == y1 else (y0, y1)
    px = lambda v: left + (v - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    py = lambda v: height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    out = [head, f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
                 'fill="none" stroke="#bbb"/>']
    for frac in (0, 0.5, 1):
        yv = y0 + frac * (y1 - y0)
        out.append(f'<text x="{left - 4}" y="{py(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.4g}</text>')
    ticks = sorted(set(px_all))
    ends = [(ticks[0], "start"), (ticks[-1], "end")] if len(ticks) > 1 else [(ticks[0], "middle")]
    for xv, anchor in ends:  # the first and last x, kept inside the chart
        label = (x_labels or {}).get(xv, f"{xv:.0f}")
        out.append(f'<text x="{px(xv):.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="{anchor}">{e(label)}</text>')
    for i, (name, pts) in enumerate(lines.items()):
        colour = "rgb({},{},{})".format(*COLOURS[i % len(COLOURS)])
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        if len(pts) > 1:
            out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if markers or len(pts) == 1:
            out += [f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>' for x, y in pts]
        if len(lines) > 1:
            out.append(f'<text x="{width - right - 140}" y="{top + 14 + 14 * i}" font-size="11" fill="{colour}">— {e(name)}</text>')
    return "".join(out) + "</svg>"


def bar_chart_svg(items: list[tuple[str, float]], title: str, unit: str = "s", width: int = 720) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    e, bar_h, left = html.escape, 20, 170
    items = [(name, float(v)) for name, v in items if _finite(v)]
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


# ---- HTML -------------------------------------------------------------------------------------------------------

def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if _finite(v):
            return f'<td class="n">{_fmt(v)}</td>'
        return f'<td class="{v.lower()}">{v}</td>' if v in ("pass", "FAIL") else f"<td>{html.escape(_fmt(v))}</td>"
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>{body}</table>" if body else ""


def _png_data_uri(pngs: list[bytes]) -> str:
    """The PNGs tiled in one row (scaled up so small samples are visible), as a data: URI."""
    arrays = [decode_png(p) for p in pngs]
    h, w, c = arrays[0].shape
    if any(a.shape != arrays[0].shape for a in arrays):  # mixed sizes or modes: bring all to the first's size, RGB
        arrays = [np.asarray(Image.fromarray(a.squeeze(-1) if a.shape[2] == 1 else a).convert("RGB").resize((w, h)))
                  for a in arrays]
    buf = io.BytesIO()
    grid(arrays, ncol=len(arrays), scale=max(1, min(4, 64 // max(h, w)))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _samples_html(images: dict[str, dict[str, list[bytes]]], texts: dict[str, dict[str, list[str]]]) -> str:
    e, out = html.escape, []
    for model, cells in images.items():
        rows = "".join(f'<tr><th>{e(label)}</th><td><img alt="{e(model)} {e(label)}" data-label="{e(label)}" '
                       f'src="{_png_data_uri(pngs)}"></td></tr>' for label, pngs in cells.items() if pngs)
        out.append(f"<h3>{e(model)}: images per label</h3><table><tr><th>label</th><th>samples</th></tr>{rows}</table>")
    for model, cells in texts.items():
        out.append(f"<h3>{e(model)}: texts per prompt</h3>")
        out += [f"<h4>prompt: <code>{e(prompt)}</code></h4>"
                + "".join(f'<div class="sample"><pre>{e(t[:2000])}</pre></div>' for t in samples)
                for prompt, samples in cells.items()]
    return "".join(out) or "<p>No generated rows to show tonight.</p>"


def _trends_html(nights: list[dict[str, Any]]) -> str:
    """One chart per (model, metric) seen on any night, x = the nights' run dates."""
    by_date = {n["run_date"]: _figures(n) for n in nights if _is_date(n.get("run_date"))}
    days = {d: float(date.fromisoformat(d).toordinal()) for d in sorted(by_date)}
    pairs = sorted({(m, k) for figs in by_date.values() for m, vals in figs.items() for k in vals})
    charts = [line_chart_svg(list(days.values()), {metric: [by_date[d].get(model, {}).get(metric) for d in days]},
                             f"{model} · {metric}", key=f"{model}/{metric}", x_labels={x: d for d, x in days.items()})
              for model, metric in pairs]
    return f'<div class="charts">{"".join(charts)}</div>' if charts else "<p>No quality figures yet.</p>"


def _loss_html(curves: dict[str, tuple[str, pd.DataFrame]]) -> str:
    """Every loss-like column against the optimiser step: training losses from per-step rows (per-epoch rows
    when there are none), validation losses from per-epoch rows, as in ``jobs.train._loss_curve``."""
    charts = []
    for model, (version, metrics) in curves.items():
        if "step" not in metrics or "scope" not in metrics:
            continue
        metrics = metrics.sort_values("step", kind="stable").reset_index(drop=True)
        metrics = metrics.iloc[:: max(1, len(metrics) // 400)] if len(metrics) > 800 else metrics
        steps = metrics["scope"] == "step"
        series = {c: metrics[c].where(~steps if c.startswith("val_") or not steps.any() else steps).astype(float).tolist()
                  for c in metrics.columns if "loss" in c or c in ("recon", "kl", "val_recon", "val_kl")}
        charts.append(line_chart_svg(metrics["step"].astype(float).tolist(), series, f"{model} {version}: loss by step",
                                     key=f"loss:{model}", markers=False))
    return f'<div class="charts">{"".join(charts)}</div>' if charts else "<p>No training metrics found.</p>"


def _counts_html(night: dict[str, Any]) -> str:
    pre, gen = night.get("preprocess") or {}, night.get("generate") or {}
    c, out = pre.get("counts") or {}, []
    if c:
        out.append(f"<h3>Preprocess: dataset <code>{html.escape(_fmt(pre.get('dataset_version')))}</code>"
                   f"{' (unchanged, reused)' if pre.get('reused') else ''}</h3>")
        out.append(_table(["source", "inputs", "accepted", "rejected"],
                          [[s, v.get("inputs"), v.get("accepted"), v.get("rejected")] for s, v in (c.get("by_source") or {}).items()]
                          + [["all", c.get("inputs"), c.get("accepted"), c.get("rejected")]]))
        out.append(f"<p>train {_fmt(c.get('train'))}, val {_fmt(c.get('val'))}</p>")
        out.append(_table(["reject reason", "rows"], (c.get("by_reason") or {}).items()))
    if gen:
        top_up = gen.get("top_up") or {}
        out.append(f"<h3>Generation</h3><p>{_fmt(gen.get('rows'))} rows, {_fmt(gen.get('rejected'))} rejected; "
                   f"top-up {_fmt(top_up.get('rounds'))} round(s), {_fmt(top_up.get('extra_rows'))} extra rows</p>")
        out.append(_table(["model", "rows"], (gen.get("by_model") or {}).items()))
        out.append(_table(["rejected reason", "rows"], (gen.get("rejected_by_reason") or {}).items()))
        out.append(_table(["short of request", "rows"], (gen.get("short_of_request") or {}).items()))
    models = night.get("models") or []
    if models:
        out.append("<h3>Models</h3>" + _table(
            ["model", "family", "production version", "trained", "why", "candidate", "promoted", "promotion failures"],
            [[m.get("name"), m.get("family"), m.get("version"), m.get("trained"), m.get("decision"), m.get("candidate"),
              m.get("promoted"), "; ".join(m.get("promotion_failures") or []) or None] for m in models]))
    return "".join(out) or "<p>No counts: the night stopped before preprocessing finished.</p>"


def _page(night: dict[str, Any], nights: list[dict[str, Any]], images: dict, texts: dict,
          curves: dict[str, tuple[str, pd.DataFrame]], unreadable: str | None) -> str:
    e, status = html.escape, night.get("status") or "unknown"
    badge = "ok" if status == "published" else "bad" if status in ("refused", "failed") else "unknown"
    title = f"{night.get('name') or 'nightly'} · {night.get('run_date') or '?'}"
    gate = night.get("gate") or {}
    checks = _table(["model", "metric", "value", "baseline", "bound", "passed"],
                    [[r["model"], r["metric"], r["value"], r["baseline"], r["bound"],
                      None if r["passed"] is None else "pass" if r["passed"] else "FAIL"] for r in _headline_rows(night)])
    lift = _table(["model", "real accuracy", "mixed accuracy", "lift", "k per label", "synthetic per label"],
                  [[m, v.get("real_accuracy"), v.get("mixed_accuracy"), v.get("lift"), v.get("k_per_label"),
                    v.get("synthetic_per_label")] for m, v in (night.get("augmentation_lift") or {}).items()])
    stages = night.get("stages") or []
    timings = _table(["stage", "seconds", "rows", "rows/s", "note"],
                     [[s.get("stage"), s.get("seconds"), s.get("rows"), s.get("rows_per_second"), s.get("note")] for s in stages])
    bars = bar_chart_svg([(str(s.get("stage")), s.get("seconds")) for s in stages], "seconds per stage") if stages else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{e(title)}</title><style>{CSS}</style></head><body>
<h1>{e(title)}</h1>
<p><span class="badge {badge}">{e(status)}</span> {e(night.get('reason') or '')}</p>
<p>started {e(_fmt(night.get('started_at')))} · {_fmt(night.get('seconds'))} s in all</p>
<h2>Headline</h2>{checks or '<p>No quality figures tonight.</p>'}
{f'<p class="fail">Gate failures: {e("; ".join(gate["failures"]))}</p>' if gate.get("failures") else ''}
{f'<h3>Augmentation lift</h3>{lift}' if lift else ''}
<h2>Samples</h2>{f'<p class="fail">{e(unreadable)}</p>' if unreadable else ''}{_samples_html(images, texts)}
<h2>Quality trends</h2>{_trends_html(nights)}
<h2>Loss curves</h2>{_loss_html(curves)}
<h2>Counts</h2>{_counts_html(night)}
<h2>Timings and throughput</h2>{timings or '<p>No stage timings.</p>'}{bars}
</body></html>
"""
