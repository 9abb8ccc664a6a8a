"""The nightly report's page: one self-contained HTML document (inline CSS, PNGs as ``data:`` URIs, charts as
inline SVG from ``jobs.store.pictures``), built from a night dict (``NightResult.to_dict``) and the earlier nights'
ones. Any key may be missing or None (a failed night, an older ``report.json``): what is missing is left out."""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import date
from typing import Any, Iterable

import numpy as np
import pandas as pd
from PIL import Image

from jobs.store.pictures import bar_chart_svg, finite, grid, line_chart_svg
from jobs.store.png import decode_png
from jobs.train.register import loss_series

LIFT = "augmentation_lift"

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


# ---- HTML -------------------------------------------------------------------------------------------------------

def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if finite(v):
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


def _loss_html(curves: dict[str, tuple[str, str, pd.DataFrame]]) -> str:
    """Each model's losses against the optimiser step (``jobs.train.register.loss_series``: the family says which
    metrics are losses), thinned to about 400 rows."""
    charts = []
    for model, (version, family, metrics) in curves.items():
        if "step" not in metrics or "scope" not in metrics:
            continue
        metrics = metrics.sort_values("step", kind="stable").reset_index(drop=True)
        metrics = metrics.iloc[:: max(1, len(metrics) // 400)] if len(metrics) > 800 else metrics
        steps, series = loss_series(metrics, family)
        charts.append(line_chart_svg(steps, series, f"{model} {version}: loss by step", key=f"loss:{model}", markers=False))
    return f'<div class="charts">{"".join(charts)}</div>' if charts else "<p>No training metrics found.</p>"


def credentials_note(info: dict[str, Any] | None) -> str | None:
    """How a night's content is signed, in one line (the summary and the report say the same)."""
    if not info:
        return None
    if not info.get("signed"):
        return "UNSIGNED (signing.enabled: false): images carry the AI-content label only; `aigc verify` fails them"
    note = f"C2PA, signed by {info.get('signer')} ({info.get('algorithm')})"
    if info.get("development"):
        note += (": a DEVELOPMENT chain, UNTRUSTED outside this machine (`aigc keys`); name your own in "
                 "signing.certificate / signing.private_key")
    return note + ("" if info.get("timestamped") else "; no time-stamp authority")


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


def cost_note(cost: dict[str, Any] | None) -> str | None:
    """The night's cost in one line: reserved CPU- and GPU-hours, the object store's peak, the budget."""
    total = (cost or {}).get("total")
    if not total:
        return None
    note = (f"{total['cpu_seconds'] / 3600:.3g} CPU-hours, {total['gpu_seconds'] / 3600:.3g} GPU-hours reserved over "
            f"{total['wall_seconds'] / 60:.3g} min, object store peak {total['object_store_peak_bytes'] / 2**20:.3g} MiB")
    limits = cost.get("budget") or {}
    if limits:
        note += "; budget " + ", ".join(f"{k} {v:g}" for k, v in limits.items())
        guess = cost.get("estimate")
        note += (f" (estimate {guess['cpu_seconds'] / 3600:.3g} CPU-h, {guess['wall_seconds'] / 60:.3g} min)" if guess
                 else " (no estimate: no earlier night with costs)")
    if cost.get("over"):
        note += f"; OVER: {cost['over'].split(';')[0]}"
    if cost.get("sampled") is False:
        note += "; Ray's reservations could not be sampled (a Ray Client connection?): CPU/GPU figures are 0"
    return note


def _cost_html(night: dict[str, Any], nights: list[dict[str, Any]]) -> str:
    """The cost panel: each stage's wall time, reserved CPU-/GPU-seconds, rows per CPU-second and object store
    peak; the budget; and CPU-hours and wall minutes over the nights."""
    cost = night.get("cost") or {}
    stages = [s for s in night.get("stages") or [] if s.get("cpu_seconds") is not None]
    if not stages and not cost.get("total"):
        return "<p>No cost figures (the night stopped before its meter started, or is older than them).</p>"
    mib = lambda b: None if b is None else round(b / 2**20, 1)  # noqa: E731
    table = _table(["stage", "wall s", "CPU-s reserved", "GPU-s reserved", "rows", "rows / CPU-s", "rows / GPU-s",
                    "object store peak MiB", "nodes"],
                   [[s["stage"], s.get("seconds"), s.get("cpu_seconds"), s.get("gpu_seconds"), s.get("rows"),
                     s.get("rows_per_cpu_second"), s.get("rows_per_gpu_second"), mib(s.get("object_store_peak_bytes")),
                     len(s.get("nodes") or {})] for s in stages])
    note = cost_note(cost)
    bad = ' class="fail"' if cost.get("over") else ""
    by_date = {n["run_date"]: n["cost"]["total"] for n in nights
               if _is_date(n.get("run_date")) and (n.get("cost") or {}).get("total")}
    days = {d: float(date.fromisoformat(d).toordinal()) for d in sorted(by_date)}
    trend = ""
    if days:
        labels = {x: d for d, x in days.items()}
        trend = '<div class="charts">' + "".join([
            line_chart_svg(list(days.values()), {"CPU-hours": [by_date[d]["cpu_seconds"] / 3600 for d in days],
                                                 "GPU-hours": [by_date[d]["gpu_seconds"] / 3600 for d in days]},
                           "reserved per night", key="cost/hours", x_labels=labels),
            line_chart_svg(list(days.values()), {"minutes": [by_date[d]["wall_seconds"] / 60 for d in days]},
                           "wall time per night", key="cost/minutes", x_labels=labels)]) + "</div>"
    return (f"<p{bad}>{html.escape(note)}</p>" if note else "") + table + trend


def _credentials_html(note: str | None) -> str:
    if note is None:
        return ""
    warn = ' class="fail"' if "UNSIGNED" in note or "UNTRUSTED" in note else ""
    return f"<p{warn}>Content Credentials: {html.escape(note)}</p>"


def page(night: dict[str, Any], nights: list[dict[str, Any]], images: dict, texts: dict,
         curves: dict[str, tuple[str, str, pd.DataFrame]], unreadable: str | None) -> str:
    e, status = html.escape, night.get("status") or "unknown"
    badge = "ok" if status == "published" else "bad" if status in ("refused", "failed", "stopped") else "unknown"
    title = f"{night.get('name') or 'nightly'} · {night.get('run_date') or '?'}"
    gate = night.get("gate") or {}
    checks = _table(["model", "metric", "value", "baseline", "bound", "passed"],
                    [[r["model"], r["metric"], r["value"], r["baseline"], r["bound"],
                      None if r["passed"] is None else "pass" if r["passed"] else "FAIL"] for r in _headline_rows(night)])
    lift = _table(["model", "real accuracy", "mixed accuracy", "lift", "lift sd", "repeats", "k per label",
                   "synthetic per label"],
                  [[m, v.get("real_accuracy"), v.get("mixed_accuracy"), v.get("lift"), v.get("lift_sd"), v.get("repeats"),
                    v.get("k_per_label"), v.get("synthetic_per_label")]
                   for m, v in (night.get("augmentation_lift") or {}).items()])
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
{_credentials_html(credentials_note(_get(night, "generate", "credentials")))}
<h2>Headline</h2>{checks or '<p>No quality figures tonight.</p>'}
{f'<p class="fail">Gate failures: {e("; ".join(gate["failures"]))}</p>' if gate.get("failures") else ''}
{f'<h3>Augmentation lift</h3>{lift}' if lift else ''}
<h2>Samples</h2>{f'<p class="fail">{e(unreadable)}</p>' if unreadable else ''}{_samples_html(images, texts)}
<h2>Quality trends</h2>{_trends_html(nights)}
<h2>Loss curves</h2>{_loss_html(curves)}
<h2>Counts</h2>{_counts_html(night)}
<h2>Timings and throughput</h2>{timings or '<p>No stage timings.</p>'}{bars}
<h2>Cost</h2>{_cost_html(night, nights)}
</body></html>
"""
