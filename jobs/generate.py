"""Batch generation on Ray Data, published atomically as ``ROOT/generated/date=YYYY-MM-DD/`` (``jobs.layout``).

The pipeline: request *cells* (one per request x label or prompt, held on the driver) -> rows expanded from
index ranges inside Ray tasks -> ``Generator`` actors (the models, on GPUs with ``use_gpu``) -> ``Finisher``
actors on CPUs (PNG encoding with the provenance label, quality scores, filters) -> Parquet files cut by
bytes. The driver never holds a row per sample, so a million-row night keeps its memory flat.

Reproducibility: a row's id and seed come from (run date, request id, sample index), and each row is
sampled on its own, so its bytes never depend on batch size, actor count or row order.

Nothing is dropped: rows whose sampling raises and rows a filter refuses land in
``ROOT/rejects/generated/date=.../`` with a reason code; the manifest checks that
generated = published + rejected. With ``filters.top_up`` the job samples replacements for the refused rows
(each cell's extra indices continue a sequence of its own) until every cell has its count, for at most
``top_up_rounds`` rounds.

Resumable: the staging folder is named by a fingerprint of what the night will produce (cells, model
versions, filters, briefs); a re-run after a crash finds it, keeps the files already written (a truncated
file is deleted) and generates only the missing rows. Each top-up round's plan is saved before it runs, so
an interrupted night publishes the same rows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import time
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from . import capacity, faults, provenance, quality, registry, request_table, schema
from .images import encode_png
from . import layout, progress
from .publish import publish, resumable_staging
from .specs import ErrorBudgetExceeded, FilterSpec, GenerateSpec, RequestSpec, check_error_budget
from .storage import Store

CELL_COLUMNS = ["request_id", "model_name", "modality", "label", "prompt", "sampler", "brief", "key", "start", "n"]
ROW_COLUMNS = ["id", "request_id", "model_name", "modality", "label", "prompt", "seed", "sampler", "brief"]


@dataclasses.dataclass
class GenerateResult:
    run_date: str
    run_id: str
    path: str
    rows: int
    rejected: int
    by_modality: dict[str, int]
    seconds: float
    rows_per_second: float
    manifest: dict[str, Any]
    staging: str | None = None  # store path of the staged partition while it waits for the gate (publish=False)
    reused: bool = False  # the date was already published from exactly this work: nothing was regenerated


def row_key(run_date: str, request_id: str, index: int) -> tuple[str, int]:
    """(id, seed) of sample ``index`` of ``request_id`` on ``run_date``: the same inputs, the same row."""
    digest = hashlib.sha256(f"{run_date}|{request_id}|{index}".encode()).hexdigest()
    return digest[:24], int(digest[24:40], 16) & 0x7FFF_FFFF_FFFF_FFFF


def plan_requests(requests: list[RequestSpec], models: dict[str, registry.ModelRef],
                  where: list[str] | None = None, brief: list[int | None] | None = None) -> pd.DataFrame:
    """One row per (request, label or prompt): the samples ``start .. start + n - 1`` of request ``key``.
    Raises ``ValueError`` naming the request (``where[i]``, default ``generate.requests.i``) for anything it
    cannot do. ``brief[i]`` is request i's row among the request tables' pass-through columns."""
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
        defaults = card.get("sampler_defaults", {})
        unused = sorted(set(req.sampler_overrides()) - set(defaults))
        if unused:
            raise ValueError(f"{at}.{unused[0]}: {req.model} ({card['family']}) has no sampler "
                             f"setting {unused[0]!r} (it takes: {', '.join(sorted(defaults)) or 'none'})")
        sampler = json.dumps({**defaults, **req.sampler_overrides()}, sort_keys=True)
        if req.per_label is not None:
            if card["modality"] != "image":
                raise ValueError(f"{at}: per_label needs an image model; {req.model} is {card['modality']}")
            classes = card["config"].get("classes") or []
            labels = req.labels or classes or [None]
            unknown = [l for l in labels if l is not None and l not in classes]
            if unknown:
                raise ValueError(f"{at}.labels: {unknown} not among {req.model}'s classes {classes}")
            conditions, n = [("label", l) for l in labels], req.per_label
            if len(set(labels)) < len(labels):
                raise ValueError(f"{at}.labels: a label is listed twice (raise per_label instead)")
        else:
            if card["modality"] != "text":
                raise ValueError(f"{at}: prompts need a text model; {req.model} is {card['modality']}")
            conditions, n = [("prompt", p) for p in req.prompts or []], req.per_prompt or 0
            if len(set(req.prompts or [])) < len(req.prompts or []):
                raise ValueError(f"{at}.prompts: a prompt is listed twice (raise per_prompt instead)")
        for k, (kind, value) in enumerate(conditions):
            cells.append({"request_id": request_id, "model_name": req.model, "modality": card["modality"],
                          "label": value if kind == "label" else None, "prompt": value if kind == "prompt" else None,
                          "sampler": sampler, "brief": brief[pos] if brief else None, "key": request_id,
                          "start": k * n, "n": n})
    return pd.DataFrame(cells, columns=CELL_COLUMNS).astype({"start": "int64", "n": "int64"})


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


def expand_requests(requests: list[RequestSpec], models: dict[str, registry.ModelRef], run_date: str,
                    where: list[str] | None = None, brief: list[int | None] | None = None) -> pd.DataFrame:
    """Every row of the requests, on the driver (the job itself expands cells inside Ray tasks)."""
    cells = plan_requests(requests, models, where, brief)
    return rows_of(cells, run_date, np.arange(int(cells["n"].sum())))


def _expand(batch: dict[str, np.ndarray], cells: pd.DataFrame, run_date: str, skip: frozenset) -> pd.DataFrame:
    """Rows of the position ranges ``[start, stop)`` in ``batch`` (the driver holds ranges, never rows)."""
    positions = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in zip(batch["start"], batch["stop"])])
    rows = rows_of(cells, run_date, positions)
    return rows[~rows["id"].isin(skip)] if skip else rows


class Generator:
    """Ray Data callable class: loads each model once per actor and samples a batch with one call per
    (model, sampler settings); a failing call is retried row by row so only the bad rows are rejected."""

    def __init__(self, root: str, models: dict[str, tuple[str, str]], use_gpu: bool,
                 fault: list[dict[str, Any]] | None = None, stats_dir: str | None = None) -> None:
        import torch

        self.fault, self.rows_seen = fault, 0
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.store, self.stats_dir = Store(root), stats_dir
        self.models = {name: registry.load(self.store, registry.resolve(self.store, name, version), self.device)
                       for name, (version, _) in models.items()}
        if stats_dir:  # in a Ray actor: which actor on which node did how much of the night (the manifest's ``actors``)
            ctx = ray.get_runtime_context()
            self.stats = {"actor": ctx.get_actor_id() or f"pid-{os.getpid()}", "node": ctx.get_node_id(),
                          "device": self.device, "batches": 0, "rows": 0, "sample_seconds": 0.0}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        n, started = len(batch), time.perf_counter()
        self.rows_seen += n
        if faults.fire(self.fault, "generator-kill", self.rows_seen):  # the reliability suite's lost actor
            os.kill(os.getpid(), signal.SIGKILL)
        if faults.fire(self.fault, "generator-slow"):  # a batch as slow as a real model's: the pool's others get work
            time.sleep(1.5)
        raw: list = [None] * n
        text: list = [None] * n
        error: list = [None] * n
        for (name, sampler), group in batch.reset_index(drop=True).groupby(["model_name", "sampler"], sort=False):
            model = self.models[name]
            conditions = [schema.scalar(r.label if r.modality == "image" else r.prompt) for r in group.itertuples()]
            seeds = [int(x) for x in group["seed"]]
            try:  # one call per model and sampler: rows are batch-invariant, so this only changes the speed
                outs = self._sample(model, conditions, seeds, json.loads(sampler))
            except Exception:  # find the bad row(s): each alone, so one bad row never costs its neighbours
                outs = []
                for c, seed, i in zip(conditions, seeds, group.index):
                    try:
                        outs.append(self._sample(model, [c], [seed], json.loads(sampler))[0])
                    except Exception as exc:  # quarantined with the row, never allowed to kill the night
                        outs.append(None)
                        error[i] = f"{type(exc).__name__}: {exc}"
            for i, out in zip(group.index, outs):
                if out is None and error[i] is None:
                    error[i] = "the model returned no output for this row"
                if isinstance(out, str):
                    text[i] = out
                elif out is not None:
                    raw[i] = np.ascontiguousarray(out).tobytes()
        if self.stats_dir:
            self.stats.update(batches=self.stats["batches"] + 1, rows=self.stats["rows"] + n,
                              sample_seconds=round(self.stats["sample_seconds"] + time.perf_counter() - started, 3))
            self.store.write_json(self.stats, self.stats_dir, f"{self.stats['actor']}.json")
        shapes = {name: m.output_shape for name, m in self.models.items() if m.modality == "image"}  # (H, W, C)
        out = batch.copy()
        out["raw"], out["text"], out["error"] = raw, text, error
        for k, column in enumerate(("height", "width", "channels")):  # how the Finisher reshapes ``raw``
            out[column] = [shapes.get(n, (0, 0, 0))[k] for n in batch["model_name"]]
        return out

    def _sample(self, model: Any, conditions: list, seeds: list[int], sampler: dict[str, Any]) -> list:
        import torch

        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            return model.sample(conditions, seeds, **sampler)




class Finisher:
    """CPU stage: PNG-encodes images (with the provenance label inside), scores every row, applies the
    filters, writes refused and failed rows to the rejected folder and returns the accepted rows in the
    published schema, with the request tables' pass-through columns (typed as given) appended."""

    def __init__(self, store_root: str, run: dict[str, Any], rejected_dir: str, filters: FilterSpec | None = None,
                 briefs: pa.Table | None = None) -> None:
        self.store = Store(store_root)
        self.run, self.rejected_dir, self.briefs = run, rejected_dir, briefs
        self.filters = filters or FilterSpec(enabled=False)
        self.scorers = {name: quality.Scorer(self.store, m["path"], self.store.read_json(m["path"], "model_card.json"))
                        for name, m in run["models"].items()}

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        batch = batch.reset_index(drop=True)
        created = datetime.now(timezone.utc)
        cols: dict[str, list] = {f.name: [] for f in schema.GENERATED_REJECTED}
        images = self._score_images(batch)
        for i, row in enumerate(batch.itertuples(index=False)):
            model = self.run["models"][row.model_name]
            label = provenance.label(row.id, self.run["run_id"], row.model_name, model["version"], created)
            image = width = height = mode = content = quality_row = None
            why: tuple[str, str] | None = None
            if schema.scalar(row.error) is not None:
                why, stage = ("generation_error", row.error), "generate"
            elif row.modality == "image":
                arr, quality_row = images[i]
                image = {"bytes": encode_png(arr, label), "path": f"{row.id}.png"}
                content = hashlib.sha256(arr.tobytes()).hexdigest()
                height, width, mode = arr.shape[0], arr.shape[1], "L" if arr.shape[2] == 1 else "RGB"
            else:
                generated = row.text[len(schema.scalar(row.prompt) or ""):]
                quality_row = self.scorers[row.model_name].text(generated)
                content = hashlib.sha256(row.text.encode()).hexdigest()
            if why is None:
                stage = "filter"
                scorer = self.scorers[row.model_name]
                why = quality.verdict(row.modality, quality_row, None if row.modality == "image" else
                                      row.text[len(schema.scalar(row.prompt) or ""):], self.filters, scorer.near_copy_threshold)
            values = {"id": row.id, "run_id": self.run["run_id"], "run_date": date.fromisoformat(self.run["run_date"]),
                      "created_at": created, "modality": row.modality, "image": image, "width": width, "height": height,
                      "mode": mode, "text": schema.scalar(row.text), "label": schema.scalar(row.label),
                      "prompt": schema.scalar(row.prompt), "request_id": row.request_id,
                      "model_name": row.model_name, "model_family": model["family"], "model_version": model["version"],
                      "checkpoint_sha256": model["checkpoint_sha256"], "dataset_version": model["dataset_version"],
                      "seed": int(row.seed), "sampler": row.sampler, "content_sha256": content, "quality": quality_row,
                      "provenance": json.dumps(label, sort_keys=True),
                      "stage": stage if why else None, "reason": why[0] if why else None, "detail": why[1] if why else None}
            for k, v in values.items():
                cols[k].append(v)
        self._kill_drill()
        table = schema.table(cols, schema.GENERATED_REJECTED)
        refused = pc.is_valid(table.column("reason"))
        if pc.any(refused).as_py():
            self._write_rejected(table.filter(refused))
        accepted = pc.invert(refused)
        table = table.filter(accepted).select(schema.GENERATED.names).cast(schema.GENERATED)
        if self.briefs is None:
            return table
        index = pa.array([None if schema.scalar(b) is None else int(b) for b in batch["brief"]], type=pa.int64()).filter(accepted)
        extra = self.briefs.take(index)
        for name in extra.column_names:
            table = table.append_column(name, extra.column(name))
        return table.replace_schema_metadata(schema.with_hf_features(table.schema.remove_metadata()).metadata)

    def _kill_drill(self) -> None:
        """Fire drill for the resume path (``AIGC_GENERATE_KILL_AFTER_BATCHES=K`` in the driver's
        environment): after this actor's K-th batch, give the batches before it time to reach their files,
        then SIGKILL the driver, as a lost head node would."""
        drill = self.run.get("kill_drill")
        self.calls = getattr(self, "calls", 0) + 1
        if drill and self.calls > drill["after_batches"]:
            time.sleep(3)
            os.kill(drill["pid"], signal.SIGKILL)

    def _score_images(self, batch: pd.DataFrame) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """Row position -> (pixels, quality scores), scored per model in one call each."""
        out: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        ok = batch[(batch["modality"] == "image") & batch["error"].isna()]
        for name, group in ok.groupby("model_name", sort=False):
            arrs = np.stack([np.frombuffer(r.raw, dtype=np.uint8).reshape(r.height, r.width, r.channels)
                             for r in group.itertuples(index=False)])
            scores = self.scorers[name].images(arrs, [schema.scalar(l) for l in group["label"]])
            out.update({i: (a, s) for i, a, s in zip(group.index, arrs, scores)})
        return out

    def _write_rejected(self, table: pa.Table) -> None:
        name = hashlib.sha256("".join(sorted(table.column("id").to_pylist())).encode()).hexdigest()[:16]
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)  # a retried batch overwrites its own file
        self.store.write_bytes(buf.getvalue().to_pybytes(), self.rejected_dir, f"{name}.parquet")


# ---- the driver ------------------------------------------------------------------------------------

def _load_requests(spec: GenerateSpec, store: Store, models_for: Any) -> tuple[pd.DataFrame, pa.Table | None, dict]:
    """Config requests, then request tables' briefs: (cells, stacked pass-through columns, model refs)."""
    requests = list(spec.requests)
    where = [f"generate.requests.{i}" for i in range(len(requests))]
    brief: list[int | None] = [None] * len(requests)  # row in the stacked pass-through columns
    tables = []
    for table_spec in spec.request_tables:
        reqs, places, passthrough = request_table.load(table_spec)
        first = sum(rows for _, rows in tables)
        brief += range(first, first + len(reqs))
        requests, where = requests + reqs, where + places
        tables.append((passthrough, len(reqs)))
    for at, req in list(zip(where, requests))[len(spec.requests):]:  # a brief's typo names its table row
        if not store.exists("models", req.model):
            raise ValueError(f"{at}.model: no model named {req.model!r} under {store.display('models')}")
    models = models_for(sorted({r.model for r in requests}))
    return plan_requests(requests, models, where, brief), request_table.briefs(tables), models


def _fingerprint(run_date: str, cells: pd.DataFrame, models: dict[str, registry.ModelRef], filters: FilterSpec,
                 briefs: pa.Table | None, use_gpu: bool) -> str:
    """What the night will publish, exactly: rows differ across device types, so the device is part of it."""
    h = hashlib.sha256(json.dumps([run_date, schema.SCHEMA_VERSION, filters.model_dump(), use_gpu,
                                   {n: r.card["checkpoint_sha256"] for n, r in sorted(models.items())}]).encode())
    h.update(pd.util.hash_pandas_object(cells.astype(str), index=False).to_numpy().tobytes())
    if briefs is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, briefs.schema) as w:
            w.write_table(briefs)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _bytes_per_row(cells: pd.DataFrame, models: dict[str, registry.ModelRef]) -> int:
    """A generous upper bound of one published row's bytes (PNGs of noise barely compress; labels and
    lineage strings add a few KB), used to cut files and row groups by bytes."""
    worst = 0
    for name, group in cells.groupby("model_name"):
        if models[name].card["modality"] == "image":
            payload = int(np.prod(models[name].image_shape)) + 1024
        else:
            longest = max(len((p or "").encode()) for p in group["prompt"])
            payload = longest + 4 * max(json.loads(s).get("max_new_tokens", 256) for s in group["sampler"])
        worst = max(worst, payload)
    return worst + 6 * 1024


class _Staging:
    """What a staging folder already holds: ids written (accepted or rejected) and the top-up plans."""

    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path = store, path

    def files(self, rejected: bool = False) -> list[str]:
        where = (self.path, "_rejected") if rejected else (self.path,)
        if not self.store.exists(*where):
            return []
        return [f for f in self.store.files(*where, suffix=".parquet")
                if rejected or not f[len(self.store.path(self.path)) + 1:].startswith("_")]

    def drop_truncated(self) -> int:
        """Deletes files a killed run left half-written (no readable footer); their rows are generated again."""
        dropped = 0
        for where in (self.path, f"{self.path}/_rejected"):  # a killed Store.write_bytes leaves *.tmp-* files
            for f in self.store.files(where) if self.store.exists(where) else []:
                if ".tmp-" in f.rsplit("/", 1)[-1]:
                    self.store.fs.delete_file(f)
        for f in self.files() + self.files(rejected=True):
            try:
                pq.read_metadata(f, filesystem=self.store.fs)
            except Exception:
                self.store.fs.delete_file(f)
                dropped += 1
        return dropped

    def ids(self) -> frozenset:
        out: set = set()
        for f in self.files() + self.files(rejected=True):
            out.update(pq.read_table(f, columns=["id"], filesystem=self.store.fs).column("id").to_pylist())
        return frozenset(out)

    def rows(self) -> int:
        """Accepted rows written so far (Parquet footers only): the progress of the night."""
        total = 0
        for f in self.files():
            if ".tmp-" not in f:
                try:
                    total += pq.read_metadata(f, filesystem=self.store.fs).num_rows
                except Exception:  # still being written
                    continue
        return total

    def accepted_per_cell(self) -> Counter:
        counts: Counter = Counter()
        for f in self.files():
            t = pq.read_table(f, columns=["request_id", "label", "prompt"], filesystem=self.store.fs)
            counts.update(zip(t.column("request_id").to_pylist(), t.column("label").to_pylist(), t.column("prompt").to_pylist()))
        return counts

    @property
    def progress(self) -> str:
        """Beside the staging folder, not in it: it must outlive the folder's publish until the end."""
        return f"{self.path}.progress.json"

    def plans(self) -> list[list[dict[str, Any]]]:
        return self.store.read_json(self.progress)["plans"] if self.store.exists(self.progress) else []

    def save_plans(self, plans: list[list[dict[str, Any]]]) -> None:
        self.store.write_json({"plans": plans}, self.progress)


def _top_up_plan(cells: pd.DataFrame, accepted: Counter, plans: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Replacement samples for every cell short of its count: its own top-up sequence, continued."""
    used: dict[tuple, int] = {}
    for plan in plans:
        for c in plan:
            used[(c["request_id"], c["label"], c["prompt"])] = c["start"] + c["n"]
    plan = []
    for cell in cells.itertuples(index=False):
        k = (cell.request_id, schema.scalar(cell.label), schema.scalar(cell.prompt))
        short = int(cell.n) - accepted.get(k, 0)
        if short > 0:
            plan.append({"request_id": k[0], "label": k[1], "prompt": k[2], "start": used.get(k, 0), "n": short})
    return plan


def _plan_cells(cells: pd.DataFrame, plan: list[dict[str, Any]]) -> pd.DataFrame:
    base: dict[tuple, dict[str, Any]] = {}
    for cell in cells.to_dict("records"):
        base.setdefault((cell["request_id"], schema.scalar(cell["label"]), schema.scalar(cell["prompt"])), cell)
    rows = []
    for c in plan:
        row = dict(base[(c["request_id"], c["label"], c["prompt"])])
        row.update(key=f"{c['request_id']}|top-up|{c['label'] if c['label'] is not None else c['prompt']}",
                   start=c["start"], n=c["n"])
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_COLUMNS).astype({"start": "int64", "n": "int64"})


def run_generation(spec: GenerateSpec, store: Store, run_date: str, run_name: str,
                   count: int | None = None, versions: dict[str, str] | None = None,
                   publish_now: bool = True, force: bool = False) -> GenerateResult:
    """Generates the configured requests for ``run_date`` and publishes the partition whole.

    ``count`` caps the rows (first N in request order) for quick runs; ``versions`` pins model versions
    (default: each model's production version). An interrupted run of the same night resumes. With
    ``publish_now=False`` the partition stays staged (``result.staging``) for the quality gate to judge;
    ``publish_generation`` or ``discard_generation`` then settles it. A date already published from exactly
    the same work (requests, model checkpoints, filters, briefs, device) is not regenerated unless ``force``."""
    started = time.time()
    date.fromisoformat(run_date)  # ValueError for a malformed date, before any work
    cells, briefs, models = _load_requests(
        spec, store, lambda names: {n: registry.resolve(store, n, (versions or {}).get(n)) for n in names})
    cells = cap_cells(cells, count)
    if cells.empty or cells["n"].sum() == 0:
        raise ValueError("generate.requests: nothing to generate (no requests or request tables, or all counts are zero)")
    pools = size_pools(spec)  # before any work: a night the cluster cannot hold fails now, naming the key
    cells = cells.sort_values("model_name", kind="stable").reset_index(drop=True)  # blocks of one model
    key = _fingerprint(run_date, cells, models, spec.filters, briefs, spec.use_gpu)
    partition = layout.night(run_date)
    run_id = f"{run_name}:{run_date}:{key[:8]}"
    done_before = None if force else published_unchanged(store, run_date, key, run_id)
    if done_before is not None:
        progress.say(f"[generate] {partition} is already published from the same requests, models and settings: "
                     "nothing to regenerate (--refresh regenerates it)")
        return GenerateResult(run_date, run_id, store.display(layout.generated(run_date)), done_before["rows"],
                              done_before["rejected"], done_before["by_modality"], time.time() - started, 0.0,
                              done_before, None, reused=True)
    staging_path, resumed = resumable_staging(store, "generated", partition, key[:16])
    staging = _Staging(store, staging_path)
    run = {"run_id": run_id, "run_date": run_date, "fingerprint": key,
           "models": {n: {"version": r.version, "family": r.card["family"], "checkpoint_sha256": r.card["checkpoint_sha256"],
                          "dataset_version": r.card["dataset_version"], "path": r.path} for n, r in models.items()}}
    if os.environ.get("AIGC_GENERATE_KILL_AFTER_BATCHES"):  # see Finisher._kill_drill
        run["kill_drill"] = {"after_batches": int(os.environ["AIGC_GENERATE_KILL_AFTER_BATCHES"]), "pid": os.getpid()}
    resume = {"truncated_files_dropped": staging.drop_truncated(), "rows_found": 0} if resumed else None
    per_row = _bytes_per_row(cells, models)
    gen_started = time.time()
    done = staging.ids() if resumed else frozenset()
    if resume is not None:
        resume["rows_found"] = len(done)
        progress.say(f"[generate] resuming {partition}: {len(done)} rows already written in {store.display(staging_path)}")
    generated, rounds = int(cells["n"].sum()), []
    with progress.watch("generate", generated, "rows", staging.rows, every=2.0 if store.is_local else 10.0):
        _generate_all(cells, done, spec, store, staging, staging_path, run, briefs, per_row, pools, rounds)
    generated += sum(rounds)
    gen_seconds = time.time() - gen_started
    manifest = _manifest(store, staging, cells, run, generated, gen_seconds, rounds, resume, spec.filters)
    if manifest["rows"] + manifest["rejected"] != generated:
        store.delete(staging_path)  # never resume from a state that does not add up: the re-run starts clean
        store.delete(staging.progress)
        raise RuntimeError(f"accounting broke: {generated} generated, {manifest['rows']} written, {manifest['rejected']} rejected")
    try:
        check_error_budget("generate.filters.max_reject_share", manifest["rejected"], generated,
                           manifest["rejected_by_reason"], spec.filters.max_reject_share, "generated rows")
    except ErrorBudgetExceeded:
        store.delete(staging_path)  # a re-run generates the night anew (with the settings fixed)
        store.delete(staging.progress)
        raise
    seconds = time.time() - started
    result = GenerateResult(run_date, run["run_id"], store.display(layout.generated(run_date)), manifest["rows"],
                            manifest["rejected"], manifest["by_modality"], seconds, generated / max(gen_seconds, 1e-9),
                            manifest, staging_path)
    return publish_generation(store, result) if publish_now else result


def _generate_all(cells: pd.DataFrame, done: frozenset, spec: GenerateSpec, store: Store, staging: "_Staging",
                  staging_path: str, run: dict[str, Any], briefs: pa.Table | None, per_row: int, pools: "Pools",
                  rounds: list[int]) -> None:
    """The first pass, then (with ``filters.top_up``) replacement rounds; ``rounds`` gets each round's rows."""
    _run_pipeline(cells, done, spec, store, staging_path, run, briefs, per_row, pools)
    if not (spec.filters.enabled and spec.filters.top_up):
        return
    plans = staging.plans()
    for r in range(spec.filters.top_up_rounds):
        if r == len(plans):
            plan = _top_up_plan(cells, staging.accepted_per_cell(), plans)
            if not plan:
                break
            plans.append(plan)
            staging.save_plans(plans)  # before the work: a resumed night replays the same plan
        extra = _plan_cells(cells, plans[r])
        _run_pipeline(extra, staging.ids(), spec, store, staging_path, run, briefs, per_row, pools)
        rounds.append(int(extra["n"].sum()))


def published_unchanged(store: Store, run_date: str, key: str, run_id: str) -> dict[str, Any] | None:
    """The manifest of the night ``run_date`` when it was published from the work fingerprinted ``key`` and
    its files are all still there at their recorded sizes; else None (generate it)."""
    if not store.exists(layout.generated_manifest(run_date)):
        return None
    partition = layout.generated(run_date)
    manifest = store.read_json(layout.generated_manifest(run_date))
    if manifest.get("fingerprint") != key or manifest.get("run_id") != run_id:
        return None
    listed = {f["path"]: f["bytes"] for f in manifest["files"]}
    infos = store.fs.get_file_info([store.path(partition, p) for p in listed])
    if any(i.size != size for i, size in zip(infos, listed.values())):
        return None
    present = {f[len(store.path(partition)) + 1:] for f in store.files(partition, suffix=".parquet")}
    return manifest if present == set(listed) else None


def publish_generation(store: Store, result: GenerateResult, extra: dict[str, Any] | None = None) -> GenerateResult:
    """Makes a staged night visible: its rejects, then its rows, then its manifest (with ``extra`` sections such
    as the gate's figures). Earlier partitions are never touched; the same date is replaced whole."""
    partition = layout.night(result.run_date)
    staging_path = result.staging
    if staging_path is None:
        raise ValueError(f"{partition} is already published")
    store.delete(staging_path, ACTORS)
    if store.exists(staging_path, "_rejected"):
        publish(store, f"{staging_path}/_rejected", "rejects/generated", partition)
    else:
        store.delete(layout.generated_rejects(result.run_date))  # a re-run without rejects leaves none behind
    publish(store, staging_path, layout.GENERATED, partition)
    manifest = {**result.manifest, **(extra or {})}
    store.write_json(manifest, layout.generated_manifest(result.run_date))
    store.delete(f"{staging_path}.progress.json")
    return dataclasses.replace(result, manifest=manifest, staging=None)


def discard_generation(store: Store, result: GenerateResult) -> None:
    """Drops a staged night the gate refused (and its resume state: a re-run generates it anew)."""
    if result.staging:
        store.delete(result.staging)
        store.delete(f"{result.staging}.progress.json")


def _run_pipeline(cells: pd.DataFrame, skip: frozenset, spec: GenerateSpec, store: Store, staging: str,
                  run: dict[str, Any], briefs: pa.Table | None, per_row: int, pools: "Pools") -> None:
    """One Ray Data pass: expand ``cells`` (minus ``skip``) -> Generator -> Finisher -> Parquet in ``staging``."""
    total = int(cells["n"].sum())
    if total == 0:
        return
    (lo, hi, initial), (elo, ehi, einitial) = pools
    blocks = max(1, min(total // spec.batch_size, 8 * hi))
    bounds = np.linspace(0, total, blocks + 1).astype(np.int64)
    # Position ranges from the driver, expanded by tasks of a quarter CPU: ray.data.range reads with 1-CPU
    # tasks, which a node whose actors left it half a CPU can never run (see jobs/capacity.py). A task stage
    # there, not only actors, also keeps Ray Data granting this job CPUs while it runs, so the write tasks
    # stream files out (a killed night resumes from them) instead of waiting for the last batch.
    ranges = [{"start": int(a), "stop": int(b)} for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    context = ray.data.DataContext.get_current()  # a dataset keeps the context it was made in: set it first
    waited, context.wait_for_min_actors_s = context.wait_for_min_actors_s, spec.actor_start_timeout_s
    ds = ray.data.from_items(ranges, override_num_blocks=len(ranges))
    ds = ds.map_batches(_expand, fn_kwargs={"cells": cells, "run_date": run["run_date"], "skip": skip},
                        batch_size=None, batch_format="numpy", num_cpus=TASK_CPUS)
    resources = generator_resources(spec)
    ds = ds.map_batches(Generator, fn_constructor_kwargs={"root": store.root, "use_gpu": spec.use_gpu, "fault": faults.plan(),
                                                           "stats_dir": f"{staging}/{ACTORS}",
                                                           "models": {n: (m["version"], m["path"]) for n, m in run["models"].items()}},
                        batch_size=spec.batch_size, batch_format="pandas",
                        concurrency=hi if lo == hi else (lo, hi, initial), num_cpus=resources.pop("CPU"),
                        num_gpus=resources.pop("GPU", None), resources=resources or None)
    ds = ds.map_batches(Finisher, fn_constructor_kwargs={"store_root": store.root, "run": run, "filters": spec.filters,
                                                          "rejected_dir": f"{staging}/_rejected", "briefs": briefs},
                        batch_format="pandas", concurrency=ehi if elo == ehi else (elo, ehi, einitial), num_cpus=FINISHER_CPUS)
    group = max(1, min(spec.row_group_bytes, spec.max_file_bytes) // per_row)
    try:  # a pool that cannot start within actor_start_timeout_s fails the night; it never waits for ever
        ds.write_parquet(store.path(staging), filesystem=store.fs, row_group_size=group,  # Ray buffers blocks up
                         min_rows_per_file=group, max_rows_per_file=max(group, spec.max_file_bytes // per_row),  # to a group
                         ray_remote_args={"num_cpus": TASK_CPUS})
    except Exception as exc:  # Ray Data's GetTimeoutError, raised in its executor (wrapped or not)
        if "Timed out while starting actors" not in str(exc):
            raise
        raise RuntimeError(f"generate.actor_start_timeout_s: the generation actors ({_fmt_pools(spec, pools)}) did not "
                           f"all start within {spec.actor_start_timeout_s}s. The cluster can hold them, so other work "
                           "holds the resources they ask for: wait for it, lower generate.concurrency, or raise "
                           "generate.actor_start_timeout_s") from None
    finally:
        context.wait_for_min_actors_s = waited


FINISHER_CPUS = 0.5
ACTORS = "_actors"  # in a night's staging folder: one small JSON per Generator actor (never published)
TASK_CPUS = 0.25  # the expand and write tasks are light: a whole CPU each would not fit beside the actors
Pools = tuple[tuple[int, int, int], tuple[int, int, int]]


def generator_resources(spec: GenerateSpec) -> dict[str, float]:
    """What one Generator actor asks Ray for: a CPU, its GPU share with ``use_gpu``, and any custom resources."""
    return {"CPU": 1.0, **({"GPU": spec.num_gpus_per_actor} if spec.use_gpu else {}), **spec.resources_per_actor}


def size_pools(spec: GenerateSpec) -> Pools:
    """The Generator and Finisher pools, checked against the cluster's nodes: a fixed pool that cannot be placed
    (beside its Finisher pool and a write task) fails at once naming its key; an autoscaling ``[min, max]``
    pool's max is lowered to what fits, and the console says so."""
    (glo, ghi, _), (elo, ehi, _) = spec.pool(), spec.pool("encode_concurrency")
    if capacity.autoscaling():  # the nodes that would hold the pools may not be up yet: Ray's autoscaler adds them
        return spec.pool(), spec.pool("encode_concurrency")
    nodes = capacity.cluster_nodes()
    if spec.use_gpu and not any(n.get("GPU", 0) >= spec.num_gpus_per_actor for n in nodes):
        raise capacity.CapacityError("generate.use_gpu is true but no node of the Ray cluster has "
                                     f"{spec.num_gpus_per_actor:g} GPU to give a Generator actor")

    def demands(g: int, e: int) -> list[capacity.Demand]:
        return [capacity.Demand("Generator actor", "generate.concurrency", generator_resources(spec), g),
                capacity.Demand("Finisher actor", "generate.encode_concurrency", {"CPU": FINISHER_CPUS}, e),
                capacity.Demand("expand or write task", "generate.encode_concurrency", {"CPU": TASK_CPUS})]

    capacity.check(demands(glo, elo), "generation", nodes)
    g = capacity.largest_fitting(glo, ghi, lambda n: demands(n, elo), nodes)
    e = capacity.largest_fitting(elo, ehi, lambda n: demands(g, n), nodes)
    if (g, e) != (ghi, ehi):
        progress.say(f"[generate] the cluster fits {g} Generator and {e} Finisher actors (the config allows up to {ghi} "
                     f"and {ehi}): using {g} and {e}")
    return (glo, g, g), (elo, e, e)


def _fmt_pools(spec: GenerateSpec, pools: Pools) -> str:
    (_, g, _), (_, e, _) = pools
    res = ", ".join(f"{k} {v:g}" for k, v in generator_resources(spec).items())
    return f"{g} Generator with {res} each, {e} Finisher with CPU {FINISHER_CPUS:g} each"


def _actors(store: Store, staging_path: str) -> dict[str, Any]:
    """How the night's rows spread over the Generator actors (a resumed night counts the killed run's too):
    a pool that ran one actor, or one that did nearly all the rows, shows here."""
    stats = [store.read_json(f[len(store.path()) + 1:]) for f in store.files(staging_path, ACTORS, suffix=".json")]
    return {"generators": len(stats), "nodes": len({s["node"] for s in stats}),
            "rows_per_generator": sorted((s["rows"] for s in stats), reverse=True),
            "devices": sorted({s["device"] for s in stats})}


def _manifest(store: Store, staging: _Staging, cells: pd.DataFrame, run: dict[str, Any], generated: int,
              seconds: float, rounds: list[int], resume: dict | None, filters: FilterSpec) -> dict[str, Any]:
    """Counts and checksums of what was written, read back from the files batch by batch (flat memory)."""
    files, tallies = [], {c: Counter() for c in ("modality", "model_name", "request_id", "label")}
    for path in staging.files():
        digest, size = hashlib.sha256(), 0
        with store.fs.open_input_stream(path) as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
                size += len(chunk)
        meta = pq.read_metadata(path, filesystem=store.fs)
        files.append({"path": path[len(store.path(staging.path)) + 1:], "rows": meta.num_rows, "bytes": size,
                      "row_groups": meta.num_row_groups, "sha256": digest.hexdigest()})
        t = pq.read_table(path, columns=list(tallies), filesystem=store.fs)
        for c, counter in tallies.items():  # value counts in Arrow: no Python object per row
            counter.update({v["values"]: v["counts"] for v in pc.value_counts(t.column(c)).to_pylist()
                            if v["values"] is not None})
    reasons: Counter = Counter()
    for path in staging.files(rejected=True):
        reasons.update({v["values"]: v["counts"] for v in pc.value_counts(
            pq.read_table(path, columns=["reason"], filesystem=store.fs).column("reason")).to_pylist()})
    rows = sum(f["rows"] for f in files)
    targets = Counter()
    for cell in cells.itertuples(index=False):
        targets[cell.request_id] += int(cell.n)
    short = {r: n - tallies["request_id"].get(r, 0) for r, n in targets.items() if tallies["request_id"].get(r, 0) < n}
    return {
        "run_id": run["run_id"], "run_date": run["run_date"], "fingerprint": run["fingerprint"],
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(), "requested": int(cells["n"].sum()),
        "generated": generated, "rows": rows, "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "by_modality": dict(sorted(tallies["modality"].items())), "by_model": dict(sorted(tallies["model_name"].items())),
        "by_request": dict(sorted(tallies["request_id"].items())), "by_label": dict(sorted(tallies["label"].items())),
        "short_of_request": dict(sorted(short.items())),
        "filters": filters.model_dump(), "top_up": {"rounds": len(rounds), "extra_rows": sum(rounds), "per_round": rounds},
        "resumed": resume, "models": run["models"], "files": files, "actors": _actors(store, staging.path),
        "timings": {"generate_seconds": round(seconds, 3), "rows_per_second": round(generated / max(seconds, 1e-9), 2)},
    }
