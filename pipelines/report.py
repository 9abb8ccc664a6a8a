"""The nightly report: one self-contained HTML page per night, and its headline figures for Prefect.

``write_report`` writes ``ROOT/reports/run_date=D/index.html`` (inline CSS, PNGs as ``data:`` URIs, charts as
inline SVG: it opens offline and references nothing outside itself) and ``report.json`` (the night dict, which
later nights read for their trend charts). ``headline`` gives the same headline figures as markdown and table rows
for Prefect artifacts. Any key of the night dict may be missing or None (a failed night): what is missing is
left out of the page, never an error.
"""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from jobs.store import layout
from jobs.store.storage import Store

from . import report_page
from .report_page import _fmt, _get, _headline_rows, _is_date, _reasons

IMAGES_PER_LABEL = 8
TEXTS_PER_PROMPT = 5
CELLS_PER_MODEL = 50  # labels or prompts shown per model; a model with more shows its first 50
CONDITION_COLUMNS = ["modality", "model_name", "label", "prompt"]


def write_report(store: Store, night: dict[str, Any], rows_path: str | None) -> str:
    """Writes ROOT/reports/run_date=<D>/index.html and report.json (the night dict, for later trends);
    returns store.display() of index.html. ``rows_path``: a store path of a folder of generated Parquet rows
    (the published partition, or staging on a refused night) to take samples from, or None."""
    if not _is_date(night.get("run_date")):  # a night that failed before it had a date: file it under today
        night = {**night, "run_date": date.today().isoformat()}
    run_date = night["run_date"]
    folder = f"reports/run_date={run_date}"
    nights = [*earlier_nights(store, run_date), night]
    images, texts, unreadable = {}, {}, None
    try:
        images, texts = _samples(store, rows_path) if rows_path else ({}, {})
    except (OSError, ValueError) as exc:  # a damaged file costs the night its samples, not its report
        unreadable = f"samples not shown: {exc}"
    page = report_page.page(night, nights, images, texts, _loss_curves(store, night), unreadable)
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

def earlier_nights(store: Store, run_date: str) -> list[dict[str, Any]]:
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
    files = layout.data_files(store, rows_path)  # not staging's _rejected/ nor half-written files
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


def _loss_curves(store: Store, night: dict[str, Any]) -> dict[str, tuple[str, str, pd.DataFrame]]:
    """Per model: (version, family, metrics.parquet) of tonight's candidate if one was trained, else of the
    production version. Models without a readable metrics file are left out."""
    out = {}
    for m in night.get("models") or []:
        version = m.get("candidate") or m.get("version")
        if not (m.get("name") and version and store.exists("models", m["name"], version, "metrics.parquet")):
            continue
        try:
            out[m["name"]] = (version, m.get("family") or "", pd.read_parquet(io.BytesIO(
                store.read_bytes("models", m["name"], version, "metrics.parquet"))))
        except (OSError, ValueError):
            continue
    return out



