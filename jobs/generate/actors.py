"""The Ray Data callable classes of generation: ``SamplingActor`` (the models, on GPUs with ``use_gpu``),
``FinishingActor`` (CPU work: PNG with the provenance label, scores, filters, the published schema) and
``GeneratingActor``, both in one process.

A CPU night runs ``GeneratingActor``s: Ray Data never fuses two actor stages, so two pools would pickle every
batch of pixels from one process to the other for nothing. A GPU night keeps the two pools apart
(``RangeSamplingActor`` on the GPUs, ``StagingFinishingActor`` on CPUs) so the GPUs sample while CPUs encode
and score. The finishing side writes its Parquet files itself (``jobs.generate.staging.PartWriter``): the
published rows never travel through Ray's object store, and a file is named by its rows, so a retried block
replaces its own file. Each loads what it needs once per actor in ``__init__``; ``__call__`` maps a
batch to a batch. None knows the night's plan: rows arrive with their id, seed, condition and sampler settings
(``jobs.generate.plan``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from aigc_models.text import LEGACY_SAMPLER
from jobs.gate.references import References
from jobs.generate import filters
from jobs.generate.plan import NightRun, RowSource
from jobs.generate.spec import FilterSpec
from jobs.generate.staging import PartWriter, StagedOutput
from jobs.runtime import faults
from jobs.store import provenance, registry, schema
from jobs.store.credentials import Signer
from jobs.store.png import encode_png
from jobs.store.storage import Store


class SamplingActor:
    """Loads each model once per actor and samples a batch with one call per (model, sampler settings); a failing
    call is retried row by row so only the bad rows are refused. ``stats_dir``: where it records which actor on
    which node sampled how many rows (the manifest's ``actors``)."""

    def __init__(self, root: str, models: dict[str, str], use_gpu: bool, fault: faults.Plan | None = None,
                 stats_dir: str | None = None) -> None:
        import torch

        self.fault, self.rows_seen = fault, 0
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.store, self.stats_dir = Store(root), stats_dir
        self.models = {name: registry.load(self.store, registry.resolve(self.store, name, version), self.device)
                       for name, version in models.items()}
        if stats_dir:
            ctx = ray.get_runtime_context()
            self.stats = {"actor": ctx.get_actor_id() or f"pid-{os.getpid()}", "node": ctx.get_node_id(),
                          "device": self.device, "batches": 0, "rows": 0, "sample_seconds": 0.0}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        n, started = len(batch), time.perf_counter()
        self.rows_seen += n
        if faults.fire(self.fault, "generator-kill", self.rows_seen):
            os.kill(os.getpid(), signal.SIGKILL)
        if faults.fire(self.fault, "generator-slow"):
            time.sleep(1.5)
        raw: list = [None] * n
        text: list = [None] * n
        error: list = [None] * n
        for (name, sampler), group in batch.reset_index(drop=True).groupby(["model_name", "sampler"], sort=False):
            conditions = [schema.scalar(r.label if r.modality == "image" else r.prompt) for r in group.itertuples()]
            outs = self._sample_group(self.models[name], conditions, [int(x) for x in group["seed"]],
                                      json.loads(sampler), group.index, error)
            for i, out in zip(group.index, outs):
                if out is None and error[i] is None:
                    error[i] = "the model returned no output for this row"
                if isinstance(out, str):
                    text[i] = out
                elif out is not None:
                    raw[i] = np.ascontiguousarray(out).tobytes()
        self._record(n, time.perf_counter() - started)
        shapes = {name: m.output_shape for name, m in self.models.items() if m.modality == "image"}  # (H, W, C)
        out = batch.copy()
        out["raw"], out["text"], out["error"] = raw, text, error
        for k, column in enumerate(("height", "width", "channels")):  # how the FinishingActor reshapes ``raw``
            out[column] = [shapes.get(m, (0, 0, 0))[k] for m in batch["model_name"]]
        return out

    def _sample_group(self, model: Any, conditions: list, seeds: list[int], sampler: dict[str, Any], index: Any,
                      error: list) -> list:
        """One call for the group (rows are batch-invariant, so this only changes the speed); when it raises,
        each row alone, so one bad row never costs its neighbours (its error is kept with the row)."""
        try:
            return self._sample(model, conditions, seeds, sampler)
        except Exception:
            outs = []
            for c, seed, i in zip(conditions, seeds, index):
                try:
                    outs.append(self._sample(model, [c], [seed], sampler)[0])
                except Exception as exc:  # quarantined with the row, never allowed to kill the night
                    outs.append(None)
                    error[i] = f"{type(exc).__name__}: {exc}"
            return outs

    def _sample(self, model: Any, conditions: list, seeds: list[int], sampler: dict[str, Any]) -> list:
        import torch

        if model.modality == "text":  # a row recorded before a setting existed samples as it did then
            sampler = {**LEGACY_SAMPLER, **sampler}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            return model.sample(conditions, seeds, **sampler)

    def _record(self, rows: int, seconds: float) -> None:
        if not self.stats_dir:
            return
        self.stats.update(batches=self.stats["batches"] + 1, rows=self.stats["rows"] + rows,
                          sample_seconds=round(self.stats["sample_seconds"] + seconds, 3))
        self.store.write_json(self.stats, self.stats_dir, f"{self.stats['actor']}.json")


class FinishingActor:
    """PNG-encodes images (with the provenance label inside, and signed Content Credentials with the row's
    lineage when the night has a ``signer``), scores every row, applies the filters, writes
    refused and failed rows to ``rejected_dir`` and returns the accepted rows in the published schema, with the
    request tables' pass-through columns (typed as given) appended."""

    def __init__(self, store_root: str, run: NightRun, rejected_dir: str, filters: FilterSpec | None = None,
                 briefs: pa.Table | None = None, fault: faults.Plan | None = None, signer: Signer | None = None) -> None:
        self.store = Store(store_root)
        self.run, self.rejected_dir, self.briefs, self.fault, self.batches = run, rejected_dir, briefs, fault, 0
        self.signer = signer  # None: the night is unsigned (signing.enabled: false), the PNGs carry the label only
        self.filters = filters or FilterSpec(enabled=False)
        self.refs = {name: References.load(self.store, ref) for name, ref in run.models.items()}

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        accepted, refused = self.finish(batch)
        if refused.num_rows:
            self.write_rejected(refused)
        return accepted

    def finish(self, batch: pd.DataFrame) -> tuple[pa.Table, pa.Table]:
        """(accepted rows in the published schema, refused rows with stage/reason/detail)."""
        batch = batch.reset_index(drop=True)
        created = datetime.now(timezone.utc)
        cols: dict[str, list] = {f.name: [] for f in schema.GENERATED_REJECTED}
        images = self._score_images(batch)
        for i, row in enumerate(batch.itertuples(index=False)):
            for k, v in self._row(row, images.get(i), created).items():
                cols[k].append(v)
        self.batches += 1
        if faults.fire(self.fault, "generate-driver-kill", self.batches - 1):
            time.sleep(3)  # the files before this one are written first
            os.kill(faults.driver_pid(self.fault), signal.SIGKILL)
        table = schema.table(cols, schema.GENERATED_REJECTED)
        refused = pc.is_valid(table.column("reason"))
        accepted = pc.invert(refused)
        out = table.filter(accepted).select(schema.GENERATED.names).cast(schema.GENERATED)
        return (out if self.briefs is None else self._with_briefs(out, batch, accepted)), table.filter(refused)

    def _row(self, row: Any, image_scores: tuple[np.ndarray, dict[str, Any]] | None, created: datetime) -> dict[str, Any]:
        """One row in the refused-rows schema: the published columns, plus stage/reason/detail when refused."""
        model = self.run.models[row.model_name]
        label = provenance.label(row.id, self.run.run_id, row.model_name, model.version, created)
        image = width = height = mode = content = scores = why = None
        stage = "filter"
        prompt = schema.scalar(row.prompt) or ""
        if schema.scalar(row.error) is not None:
            why, stage = ("generation_error", row.error), "generate"
        elif row.modality == "image":
            arr, scores = image_scores
            image = {"bytes": encode_png(arr, label), "path": f"{row.id}.png"}
            content = hashlib.sha256(arr.tobytes()).hexdigest()
            height, width, mode = arr.shape[0], arr.shape[1], "L" if arr.shape[2] == 1 else "RGB"
        else:
            scores = filters.score_text(self.refs[row.model_name], row.text[len(prompt):])
            content = hashlib.sha256(row.text.encode()).hexdigest()
        if why is None:
            why = filters.verdict(row.modality, scores, None if row.modality == "image" else row.text[len(prompt):],
                                  self.filters, self.refs[row.model_name].near_copy_threshold)
        out = {"id": row.id, "run_id": self.run.run_id, "run_date": date.fromisoformat(self.run.run_date),
                "created_at": created, "modality": row.modality, "image": image, "width": width, "height": height,
                "mode": mode, "text": schema.scalar(row.text), "label": schema.scalar(row.label),
                "prompt": schema.scalar(row.prompt), "request_id": row.request_id, "model_name": row.model_name,
                "model_family": model.card.family, "model_version": model.version,
                "checkpoint_sha256": model.card.checkpoint_sha256, "dataset_version": model.card.dataset_version,
                "seed": int(row.seed), "sampler": row.sampler, "content_sha256": content, "quality": scores,
                "provenance": json.dumps(label, sort_keys=True), "stage": stage if why else None,
                "reason": why[0] if why else None, "detail": why[1] if why else None}
        if image is not None and self.signer is not None and why is None:  # refused rows are never published
            image["bytes"] = self.signer.sign_png(image["bytes"], image["path"], lineage(out), created.isoformat())
        return out

    def _score_images(self, batch: pd.DataFrame) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """Row position -> (pixels, quality scores), scored per model in one call each."""
        out: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        ok = batch[(batch["modality"] == "image") & batch["error"].isna()]
        for name, group in ok.groupby("model_name", sort=False):
            arrs = np.stack([np.frombuffer(r.raw, dtype=np.uint8).reshape(r.height, r.width, r.channels)
                             for r in group.itertuples(index=False)])
            scores = filters.score_images(self.refs[name], arrs, [schema.scalar(l) for l in group["label"]])
            out.update({i: (a, s) for i, a, s in zip(group.index, arrs, scores)})
        return out

    def _with_briefs(self, table: pa.Table, batch: pd.DataFrame, accepted: pa.Array) -> pa.Table:
        index = pa.array([None if schema.scalar(b) is None else int(b) for b in batch["brief"]], type=pa.int64()).filter(accepted)
        extra = self.briefs.take(index)
        for name in extra.column_names:
            table = table.append_column(name, extra.column(name))
        return table.replace_schema_metadata(schema.with_hf_features(table.schema.remove_metadata()).metadata)

    def write_rejected(self, table: pa.Table) -> None:
        """Refused rows to ``rejected_dir``, in a file named by their ids (a retried block replaces its own)."""
        name = hashlib.sha256("".join(sorted(table.column("id").to_pylist())).encode()).hexdigest()[:16]
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)  # a retried batch overwrites its own file
        self.store.write_bytes(buf.getvalue().to_pybytes(), self.rejected_dir, f"{name}.parquet")


LINEAGE = ("id", "run_id", "run_date", "model_name", "model_family", "model_version", "checkpoint_sha256",
           "dataset_version", "seed", "sampler", "label", "prompt", "request_id", "content_sha256")


def lineage(row: dict[str, Any]) -> dict[str, Any]:
    """The row's lineage as its Content Credentials state it (``aigc verify`` compares it with the row): the
    published columns that say what made it, from which weights, data and seed, with which sampler settings."""
    out = {k: row[k] for k in LINEAGE}
    out["run_date"], out["sampler"] = str(out["run_date"]), json.loads(out["sampler"])
    return out


def write_finished(finishing: FinishingActor, parts: Iterable[pd.DataFrame], out: StagedOutput) -> dict[str, np.ndarray]:
    """Finishes sampled rows part by part into one staged file of accepted rows (row groups of ``out.group_rows``)
    and one of refused rows; returns their counts, all that travels back through Ray."""
    writer, refused = PartWriter(finishing.store, out.folder, out.group_rows), []
    for part in parts:
        accepted, no = finishing.finish(part)
        writer.add(accepted)
        if no.num_rows:
            refused.append(no)
    if refused:
        finishing.write_rejected(pa.concat_tables(refused))
    return {"rows": np.array([writer.close()]), "rejected": np.array([sum(t.num_rows for t in refused)])}


class GeneratingActor:
    """A ``SamplingActor`` and a ``FinishingActor`` in one process: a CPU night's only pool. Each call takes a
    block of position ranges, expands them into rows (``jobs.generate.plan.RowSource``), samples and finishes
    them ``batch_size`` at a time and writes one staged file (``write_finished``)."""

    def __init__(self, rows: RowSource, out: StagedOutput, sampling: dict[str, Any], finishing: dict[str, Any]) -> None:
        self.rows, self.out = rows, out
        self.sampling, self.finishing = SamplingActor(**sampling), FinishingActor(**finishing)

    def __call__(self, ranges: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return write_finished(self.finishing, (self.sampling(p) for p in self.rows.parts(ranges)), self.out)


class RangeSamplingActor(SamplingActor):
    """A GPU night's sampling pool: a block of position ranges in, sampled rows out, ``batch_size`` at a time."""

    def __init__(self, rows: RowSource, **sampling: Any) -> None:
        super().__init__(**sampling)
        self.rows = rows

    def __call__(self, ranges: dict[str, np.ndarray]) -> Iterator[pd.DataFrame]:  # type: ignore[override]
        for part in self.rows.parts(ranges):
            yield super().__call__(part)


class StagingFinishingActor(FinishingActor):
    """A GPU night's finishing pool, on CPUs: a block of sampled rows in, one staged file out."""

    def __init__(self, out: StagedOutput, batch_size: int, **finishing: Any) -> None:
        super().__init__(**finishing)
        self.out, self.batch_size = out, batch_size

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:  # type: ignore[override]
        parts = (batch.iloc[i:i + self.batch_size] for i in range(0, len(batch), self.batch_size))
        return write_finished(self, parts, self.out)
