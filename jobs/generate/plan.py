"""What a night will generate: requests turned into *cells*, and cells into rows with ids and seeds.

A cell is one (request, label or prompt): the samples ``start .. start + n - 1`` of the sequence ``key``. The
driver holds cells only; rows are expanded from index ranges inside Ray tasks (``expand``), so a million-row
night keeps the driver's memory flat. A row's id and seed come from (run date, key, sample index) alone
(``row_key``): the same night asks for the same rows whatever the batch size, actor count or row order.
Top-up rounds (replacements for refused rows) continue each cell's own sequence under a key of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.generate import briefs
from jobs.generate.spec import GenerateSpec, RequestSpec
from jobs.store import schema
from jobs.store.registry import ModelRef
from jobs.store.storage import Store

CELL_COLUMNS = ["request_id", "model_name", "modality", "label", "prompt", "sampler", "brief", "key", "start", "n"]
ROW_COLUMNS = ["id", "request_id", "model_name", "modality", "label", "prompt", "seed", "sampler", "brief"]


@dataclasses.dataclass(frozen=True)
class NightRun:
    """Who tonight's rows say made them: the run, its date, the fingerprint of the work and each model's version
    (handed to the finishing actors, which write it into every row)."""

    run_id: str
    run_date: str
    fingerprint: str
    models: dict[str, ModelRef]

    def lineage(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``models``: each model's version, family, checkpoint, dataset and folder."""
        return {name: {**ref.card.lineage(), "path": ref.path} for name, ref in self.models.items()}


def row_key(run_date: str, request_id: str, index: int) -> tuple[str, int]:
    """(id, seed) of sample ``index`` of ``request_id`` on ``run_date``: the same inputs, the same row."""
    digest = hashlib.sha256(f"{run_date}|{request_id}|{index}".encode()).hexdigest()
    return digest[:24], int(digest[24:40], 16) & 0x7FFF_FFFF_FFFF_FFFF


def _conditions(req: RequestSpec, ref: ModelRef, at: str) -> tuple[list[tuple[str, str | None]], int]:
    """(``("label"|"prompt", value)`` per cell, samples per cell) of one request, checked against its model."""
    card = ref.card
    if req.per_label is not None:
        if card.modality != "image":
            raise ValueError(f"{at}: per_label needs an image model; {req.model} is {card.modality}")
        labels = req.labels or card.classes or [None]
        unknown = [l for l in labels if l is not None and l not in card.classes]
        if unknown:
            raise ValueError(f"{at}.labels: {unknown} not among {req.model}'s classes {card.classes}")
        if len(set(labels)) < len(labels):
            raise ValueError(f"{at}.labels: a label is listed twice (raise per_label instead)")
        return [("label", l) for l in labels], req.per_label
    if card.modality != "text":
        raise ValueError(f"{at}: prompts need a text model; {req.model} is {card.modality}")
    if len(set(req.prompts or [])) < len(req.prompts or []):
        raise ValueError(f"{at}.prompts: a prompt is listed twice (raise per_prompt instead)")
    return [("prompt", p) for p in req.prompts or []], req.per_prompt or 0


def plan_requests(requests: list[RequestSpec], models: dict[str, ModelRef],
                  where: list[str] | None = None, brief: list[int | None] | None = None) -> pd.DataFrame:
    """One row per (request, label or prompt). Raises ``ValueError`` naming the request (``where[i]``, default
    ``generate.requests.i``) for anything it cannot do. ``brief[i]`` is request i's row among the request tables'
    pass-through columns."""
    cells, seen = [], set()
    for pos, req in enumerate(requests):
        request_id = req.id or f"req-{pos}"
        at = where[pos] if where else f"generate.requests.{pos}"
        if request_id in seen:
            raise ValueError(f"two requests share a request id: {request_id!r}")
        seen.add(request_id)
        if req.model not in models:
            raise ValueError(f"{at}.model: no model named {req.model!r}")
        card = models[req.model].card
        unused = sorted(set(req.sampler_overrides()) - set(card.sampler_defaults))
        if unused:
            raise ValueError(f"{at}.{unused[0]}: {req.model} ({card.family}) has no sampler setting {unused[0]!r} "
                             f"(it takes: {', '.join(sorted(card.sampler_defaults)) or 'none'})")
        sampler = json.dumps({**card.sampler_defaults, **req.sampler_overrides()}, sort_keys=True)
        conditions, n = _conditions(req, models[req.model], at)
        for k, (kind, value) in enumerate(conditions):
            cells.append({"request_id": request_id, "model_name": req.model, "modality": card.modality,
                          "label": value if kind == "label" else None, "prompt": value if kind == "prompt" else None,
                          "sampler": sampler, "brief": brief[pos] if brief else None, "key": request_id,
                          "start": k * n, "n": n})
    return pd.DataFrame(cells, columns=CELL_COLUMNS).astype({"start": "int64", "n": "int64"})


def load_requests(spec: GenerateSpec, store: Store,
                  resolve: Callable[[str], ModelRef]) -> tuple[pd.DataFrame, pa.Table | None, dict[str, ModelRef]]:
    """Config requests, then request tables' briefs: (cells, stacked pass-through columns, the models asked for,
    each resolved with ``resolve``)."""
    requests = list(spec.requests)
    where = [f"generate.requests.{i}" for i in range(len(requests))]
    brief: list[int | None] = [None] * len(requests)  # row in the stacked pass-through columns
    tables = []
    for table_spec in spec.request_tables:
        reqs, places, passthrough = briefs.load(table_spec)
        first = sum(rows for _, rows in tables)
        brief += range(first, first + len(reqs))
        requests, where = requests + reqs, where + places
        tables.append((passthrough, len(reqs)))
    for at, req in list(zip(where, requests))[len(spec.requests):]:  # a brief's typo names its table row
        if not store.exists("models", req.model):
            raise ValueError(f"{at}.model: no model named {req.model!r} under {store.display('models')}")
    models = {name: resolve(name) for name in sorted({r.model for r in requests})}
    return plan_requests(requests, models, where, brief), briefs.stack(tables), models


def cap_cells(cells: pd.DataFrame, count: int | None) -> pd.DataFrame:
    """The first ``count`` rows in request order (for quick runs)."""
    if count is None:
        return cells
    before = cells["n"].cumsum() - cells["n"]
    out = cells.assign(n=np.clip(count - before, 0, cells["n"]))
    return out[out["n"] > 0].reset_index(drop=True)


def rows_of(cells: pd.DataFrame, run_date: str, positions: np.ndarray) -> pd.DataFrame:
    """Rows at ``positions`` of the cells laid end to end (row ``p`` is sample ``start + local`` of its cell)."""
    ends = cells["n"].to_numpy().cumsum()
    which = np.searchsorted(ends, positions, side="right")
    local = positions - (ends - cells["n"].to_numpy())[which]
    picked = cells.iloc[which].reset_index(drop=True)
    keys = [row_key(run_date, k, int(i)) for k, i in zip(picked["key"], picked["start"].to_numpy() + local)]
    picked.insert(0, "id", [k[0] for k in keys])
    picked["seed"] = np.array([k[1] for k in keys], dtype=np.int64)
    return picked[ROW_COLUMNS]


def expand_requests(requests: list[RequestSpec], models: dict[str, ModelRef], run_date: str,
                    where: list[str] | None = None, brief: list[int | None] | None = None) -> pd.DataFrame:
    """Every row of the requests, on the driver (the job itself expands cells inside Ray tasks)."""
    cells = plan_requests(requests, models, where, brief)
    return rows_of(cells, run_date, np.arange(int(cells["n"].sum())))


def expand(batch: dict[str, np.ndarray], cells: pd.DataFrame, run_date: str, skip: frozenset) -> pd.DataFrame:
    """Rows of the position ranges ``[start, stop)`` in ``batch``, less the ids in ``skip`` (a Ray Data task)."""
    positions = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in zip(batch["start"], batch["stop"])])
    rows = rows_of(cells, run_date, positions)
    return rows[~rows["id"].isin(skip)] if skip else rows


@dataclasses.dataclass(frozen=True)
class RowSource:
    """What a generation actor needs to turn position ranges into rows itself (no task stage between): the
    pass's cells, the night's date, the ids already written (a resumed night) and rows per model call."""

    cells: pd.DataFrame
    run_date: str
    skip: frozenset
    batch_size: int

    def parts(self, ranges: dict[str, np.ndarray]) -> Iterator[pd.DataFrame]:
        rows = expand(ranges, self.cells, self.run_date, self.skip)
        for first in range(0, len(rows), self.batch_size):
            yield rows.iloc[first:first + self.batch_size]


def position_ranges(total: int, first: int, most: int, actors: int) -> list[tuple[int, int]]:
    """Positions ``0 .. total-1`` cut into ranges, one file each: ``first`` rows for the first range of every
    actor (the first files land within seconds of the start), doubling each round up to ``most`` (a file's
    worth), and shrinking again near the end so no actor is left alone with a long last range."""
    first, most = max(1, min(first, most)), max(1, most)
    out, start, size = [], 0, first
    while start < total:
        n = min(size, most, max(first, (total - start) // (2 * actors)), total - start)
        out.append((start, start + n))
        start += n
        if len(out) % actors == 0:
            size *= 2
    return out


def _cell_key(request_id: str, label: Any, prompt: Any) -> tuple:
    return request_id, schema.scalar(label), schema.scalar(prompt)


def top_up_plan(cells: pd.DataFrame, accepted: Counter, plans: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Replacement samples for every cell short of its count (``accepted`` counts rows per cell key): its own
    top-up sequence, continued after the ``plans`` of earlier rounds."""
    used: dict[tuple, int] = {}
    for plan in plans:
        for c in plan:
            used[(c["request_id"], c["label"], c["prompt"])] = c["start"] + c["n"]
    plan = []
    for cell in cells.itertuples(index=False):
        k = _cell_key(cell.request_id, cell.label, cell.prompt)
        short = int(cell.n) - accepted.get(k, 0)
        if short > 0:
            plan.append({"request_id": k[0], "label": k[1], "prompt": k[2], "start": used.get(k, 0), "n": short})
    return plan


def plan_cells(cells: pd.DataFrame, plan: list[dict[str, Any]]) -> pd.DataFrame:
    """The cells of one top-up round: each short cell again, under its top-up key, from where its plan starts."""
    base: dict[tuple, dict[str, Any]] = {}
    for cell in cells.to_dict("records"):
        base.setdefault(_cell_key(cell["request_id"], cell["label"], cell["prompt"]), cell)
    rows = []
    for c in plan:
        row = dict(base[(c["request_id"], c["label"], c["prompt"])])
        row.update(key=f"{c['request_id']}|top-up|{c['label'] if c['label'] is not None else c['prompt']}",
                   start=c["start"], n=c["n"])
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_COLUMNS).astype({"start": "int64", "n": "int64"})
