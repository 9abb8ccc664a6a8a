"""Batch generation on Ray Data: requests -> rows with ids and seeds -> generator actors -> PNG encoding
and scoring -> Parquet, published atomically as ``ROOT/generated/run_date=YYYY-MM-DD/``.

Reproducibility: a row's id and seed come from (run date, request id, sample index), and each row is
sampled on its own (``model.sample`` with one condition and one seed), so its bytes never depend on batch
size, actor count or row order. ``batch_size`` only sets how many rows one actor call handles.

Rows whose sampling raises are not dropped: they land in ``ROOT/generated/_rejected/run_date=.../`` with
the error, and the manifest counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from . import registry, request_table, schema
from .images import encode_png
from .publish import discard, publish, staging_dir
from .specs import GenerateSpec, RequestSpec
from .storage import Store

PRODUCER = "aigc-pipeline"
REJECTED = pa.schema([("id", pa.string()), ("request_id", pa.string()), ("model_name", pa.string()),
                      ("label", pa.string()), ("prompt", pa.string()), ("seed", pa.int64()),
                      ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


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


def row_key(run_date: str, request_id: str, index: int) -> tuple[str, int]:
    """(id, seed) of sample ``index`` of ``request_id`` on ``run_date``: the same inputs, the same row."""
    digest = hashlib.sha256(f"{run_date}|{request_id}|{index}".encode()).hexdigest()
    return digest[:24], int(digest[24:40], 16) & 0x7FFF_FFFF_FFFF_FFFF


def expand_requests(requests: list[RequestSpec], models: dict[str, registry.ModelRef], run_date: str,
                    where: list[str] | None = None, brief: list[int | None] | None = None) -> pd.DataFrame:
    """One row per sample to generate. Raises ``ValueError`` naming the request (``where[i]``, default
    ``generate.requests.i``) for anything it cannot do. ``brief[i]`` is request i's row among the request
    tables' pass-through columns (``None`` for config requests)."""
    rows = []
    for pos, req in enumerate(requests):
        request_id = req.id or f"req-{pos}"
        at = where[pos] if where else f"generate.requests.{pos}"
        if req.model not in models:
            raise ValueError(f"{at}.model: no model named {req.model!r}")
        ref = models[req.model]
        card = ref.card
        defaults = card.get("sampler_defaults", {})
        unused = sorted(set(req.sampler_overrides()) - set(defaults))
        if unused:
            raise ValueError(f"{at}.{unused[0]}: {req.model} ({card['family']}) has no sampler "
                             f"setting {unused[0]!r} (it takes: {', '.join(sorted(defaults)) or 'none'})")
        sampler = {**defaults, **req.sampler_overrides()}
        if req.per_label is not None:
            if card["modality"] != "image":
                raise ValueError(f"{at}: per_label needs an image model; {req.model} is {card['modality']}")
            classes = card["config"].get("classes") or []
            labels = req.labels or classes or [None]
            unknown = [l for l in labels if l is not None and l not in classes]
            if unknown:
                raise ValueError(f"{at}.labels: {unknown} not among {req.model}'s classes {classes}")
            conditions = [("label", l) for l in labels for _ in range(req.per_label)]
        else:
            if card["modality"] != "text":
                raise ValueError(f"{at}: prompts need a text model; {req.model} is {card['modality']}")
            conditions = [("prompt", p) for p in req.prompts or [] for _ in range(req.per_prompt or 0)]
        for index, (kind, value) in enumerate(conditions):
            rid, seed = row_key(run_date, request_id, index)
            rows.append({"id": rid, "request_id": request_id, "model_name": req.model, "modality": card["modality"],
                         "label": value if kind == "label" else None, "prompt": value if kind == "prompt" else None,
                         "seed": seed, "sampler": json.dumps(sampler, sort_keys=True),
                         "brief": brief[pos] if brief else None})
    df = pd.DataFrame(rows, columns=["id", "request_id", "model_name", "modality", "label", "prompt", "seed", "sampler", "brief"])
    if df["id"].duplicated().any():
        raise ValueError(f"two requests share a request id: {df.loc[df['id'].duplicated(), 'request_id'].iloc[0]!r}")
    return df


class Generator:
    """Ray Data callable class: loads each model once per actor and samples a batch with one call per
    (model, sampler settings); a failing call is retried row by row so only the bad rows are rejected."""

    def __init__(self, root: str, models: dict[str, tuple[str, str]], use_gpu: bool) -> None:
        import torch

        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        store = Store(root)
        self.models = {name: registry.load(store, registry.resolve(store, name, version), self.device)
                       for name, (version, _) in models.items()}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        n = len(batch)
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
                if isinstance(out, str):
                    text[i] = out
                elif out is not None:
                    raw[i] = np.ascontiguousarray(out).tobytes()
        shapes = {name: (m.config.resolution, m.config.channels) for name, m in self.models.items() if m.modality == "image"}
        out = batch.copy()
        out["raw"], out["text"], out["error"] = raw, text, error
        out["size"] = [shapes.get(n, (0, 0))[0] for n in batch["model_name"]]
        out["channels"] = [shapes.get(n, (0, 0))[1] for n in batch["model_name"]]
        return out

    def _sample(self, model: Any, conditions: list, seeds: list[int], sampler: dict[str, Any]) -> list:
        import torch

        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            return model.sample(conditions, seeds, **sampler)


def encode_batch(batch: pd.DataFrame, run: dict[str, Any], store_root: str, rejected_dir: str,
                 briefs: pa.Table | None = None) -> pa.Table:
    """CPU stage: PNG-encode (with the provenance label inside), score, shape rows to the published schema,
    and append the request tables' pass-through columns (typed as given) to the rows of their briefs."""
    ok = batch["error"].isna()
    if (~ok).any():
        _write_rejected(batch[~ok], store_root, rejected_dir)
    batch = batch[ok]
    created = datetime.now(timezone.utc)
    cols: dict[str, list] = {f.name: [] for f in schema.GENERATED}
    for row in batch.itertuples(index=False):
        model = run["models"][row.model_name]
        provenance = {"ai_generated": True, "producer": PRODUCER, "content_id": row.id, "run_id": run["run_id"],
                      "model": f"{row.model_name}@{model['version']}", "created_at": created.isoformat()}
        image = width = height = mode = None
        if row.modality == "image":
            arr = np.frombuffer(row.raw, dtype=np.uint8).reshape(row.size, row.size, row.channels)
            image = {"bytes": encode_png(arr, provenance), "path": f"{row.id}.png"}
            content = hashlib.sha256(arr.tobytes()).hexdigest()
            height, width, mode = arr.shape[0], arr.shape[1], "L" if arr.shape[2] == 1 else "RGB"
            quality = _image_quality(arr)
        else:
            quality = _text_quality(row.text[len(schema.scalar(row.prompt) or ""):])
            content = hashlib.sha256(row.text.encode()).hexdigest()
        values = {"id": row.id, "run_id": run["run_id"], "run_date": date.fromisoformat(run["run_date"]),
                  "created_at": created, "modality": row.modality, "image": image, "width": width, "height": height,
                  "mode": mode, "text": schema.scalar(row.text), "label": schema.scalar(row.label),
                  "prompt": schema.scalar(row.prompt), "request_id": row.request_id,
                  "model_name": row.model_name, "model_family": model["family"], "model_version": model["version"],
                  "checkpoint_sha256": model["checkpoint_sha256"], "dataset_version": model["dataset_version"],
                  "seed": int(row.seed), "sampler": row.sampler, "content_sha256": content, "quality": quality,
                  "provenance": json.dumps(provenance, sort_keys=True)}
        for k, v in values.items():
            cols[k].append(v)
    table = schema.table(cols, schema.GENERATED)
    if briefs is None:
        return table
    index = pa.array([None if schema.scalar(b) is None else int(b) for b in batch["brief"]], type=pa.int64())
    extra = briefs.take(index)
    for name in extra.column_names:
        table = table.append_column(name, extra.column(name))
    return table.replace_schema_metadata(schema.with_hf_features(table.schema.remove_metadata()).metadata)


def _image_quality(arr: np.ndarray) -> dict[str, Any]:
    gray = arr.astype(np.float64).mean(axis=2)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).mean()
    return {"contrast": float(gray.std() / 127.5), "ink": float((np.abs(gray - border) > 64).mean()),
            "distinct_2": None, "length": None}


def _text_quality(generated: str) -> dict[str, Any]:
    data = generated.encode()
    bigrams = [data[i:i + 2] for i in range(len(data) - 1)]
    return {"contrast": None, "ink": None, "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
            "length": len(generated)}


def _write_rejected(batch: pd.DataFrame, store_root: str, rejected_dir: str) -> None:
    store = Store(store_root)
    part = batch.assign(stage="generate", reason="generation_error", detail=batch["error"])
    table = pa.Table.from_pandas(part[[f.name for f in REJECTED]], schema=REJECTED, preserve_index=False)
    name = hashlib.sha256("".join(sorted(part["id"])).encode()).hexdigest()[:16]  # a retried batch overwrites itself
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    store.write_bytes(buf.getvalue().to_pybytes(), rejected_dir, f"{name}.parquet")


def run_generation(spec: GenerateSpec, store: Store, run_date: str, run_name: str,
                   count: int | None = None, versions: dict[str, str] | None = None) -> GenerateResult:
    """Generates the configured requests for ``run_date`` and publishes the partition whole.

    ``count`` caps the rows (first N in request order) for quick runs; ``versions`` pins model versions
    (default: each model's production version)."""
    started = time.time()
    date.fromisoformat(run_date)  # ValueError for a malformed date, before any work
    requests = list(spec.requests)
    where = [f"generate.requests.{i}" for i in range(len(requests))]
    brief: list[int | None] = [None] * len(requests)  # row in the stacked pass-through columns
    tables = []
    for table_spec in spec.request_tables:  # briefs from tables, after the config's requests
        reqs, places, passthrough = request_table.load(table_spec)
        first = sum(rows for _, rows in tables)
        brief += range(first, first + len(reqs))
        requests, where = requests + reqs, where + places
        tables.append((passthrough, len(reqs)))
    briefs = request_table.briefs(tables)
    for at, req in list(zip(where, requests))[len(spec.requests):]:  # a brief's typo names its table row
        if not store.exists("models", req.model):
            raise ValueError(f"{at}.model: no model named {req.model!r} under {store.display('models')}")
    names = sorted({r.model for r in requests})
    models = {n: registry.resolve(store, n, (versions or {}).get(n)) for n in names}
    rows = expand_requests(requests, models, run_date, where, brief)
    if count is not None:
        rows = rows.iloc[:count]
    if rows.empty:
        raise ValueError("generate.requests: nothing to generate (no requests or request tables, or all counts are zero)")
    if spec.use_gpu and ray.cluster_resources().get("GPU", 0) < spec.num_gpus_per_actor:
        raise ValueError("generate.use_gpu is true but the Ray cluster has no GPU to give an actor")

    run_id = f"{run_name}:{run_date}:{uuid.uuid4().hex[:8]}"
    partition = f"run_date={run_date}"
    staging = staging_dir(store, "generated", partition)
    rejected_staging = f"{staging}/_rejected"
    run = {"run_id": run_id, "run_date": run_date,
           "models": {n: {"version": r.version, "family": r.card["family"], "checkpoint_sha256": r.card["checkpoint_sha256"],
                          "dataset_version": r.card["dataset_version"]} for n, r in models.items()}}
    rows = rows.sort_values(["model_name", "id"], kind="stable").reset_index(drop=True)
    n_blocks = max(1, min(len(rows) // spec.batch_size, 8 * spec.concurrency))
    bounds = np.linspace(0, len(rows), n_blocks + 1).astype(int)
    gen_started = time.time()
    try:
        ds = ray.data.from_pandas([rows.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        ds = ds.map_batches(Generator, fn_constructor_kwargs={"root": store.root, "use_gpu": spec.use_gpu,
                                                               "models": {n: (r.version, r.path) for n, r in models.items()}},
                            batch_size=spec.batch_size, batch_format="pandas", concurrency=spec.concurrency,
                            num_gpus=spec.num_gpus_per_actor if spec.use_gpu else None, num_cpus=1)
        ds = ds.map_batches(encode_batch, fn_kwargs={"run": run, "store_root": store.root, "rejected_dir": rejected_staging,
                                                     "briefs": briefs},
                            batch_format="pandas")
        ds.write_parquet(store.path(staging), filesystem=store.fs)
        gen_seconds = time.time() - gen_started
        manifest = _manifest(store, staging, rows, run, gen_seconds)
        published = manifest["rows"]
        if published + manifest["rejected"] != len(rows):
            raise RuntimeError(f"accounting broke: {len(rows)} requested, {published} written, {manifest['rejected']} rejected")
        if store.exists(rejected_staging):
            publish(store, rejected_staging, "generated/_rejected", partition)
        else:
            store.delete("generated/_rejected", partition)  # a re-run without rejects leaves none behind
        publish(store, staging, "generated", partition)
        store.write_json(manifest, "generated/_manifests", f"{partition}.json")
    except BaseException:
        discard(store, staging)
        raise
    seconds = time.time() - started
    return GenerateResult(run_date, run_id, store.display("generated", partition), published, manifest["rejected"],
                          manifest["by_modality"], seconds, len(rows) / max(gen_seconds, 1e-9), manifest)


def _manifest(store: Store, staging: str, rows: pd.DataFrame, run: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Counts and checksums of what was written (read back from the files, not assumed)."""
    files = []
    for path in store.files(staging, suffix=".parquet"):
        rel = path[len(store.path(staging)) + 1:]
        if rel.startswith("_"):
            continue
        with store.fs.open_input_file(path) as f:
            data = f.read()
        files.append({"path": rel, "rows": pq.read_metadata(pa.BufferReader(data)).num_rows,
                      "sha256": hashlib.sha256(data).hexdigest()})
    cols = ["modality", "model_name", "request_id", "label"]
    written = (pads.dataset(store.path(staging), filesystem=store.fs, format="parquet").to_table(columns=cols).to_pandas()
               if files else pd.DataFrame(columns=cols))
    rejected = (pads.dataset(store.path(staging, "_rejected"), filesystem=store.fs, format="parquet").count_rows()
                if store.exists(staging, "_rejected") else 0)

    def tally(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in written[col].dropna().value_counts().sort_index().items()}

    return {
        "run_id": run["run_id"], "run_date": run["run_date"], "schema_version": schema.SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(), "requested": len(rows), "rows": len(written),
        "rejected": int(rejected), "by_modality": tally("modality"), "by_model": tally("model_name"),
        "by_request": tally("request_id"), "by_label": tally("label"), "models": run["models"], "files": files,
        "timings": {"generate_seconds": round(seconds, 3), "rows_per_second": round(len(rows) / max(seconds, 1e-9), 2)},
    }
