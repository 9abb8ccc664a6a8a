"""Augmented datasets (``aigc augment``): curated real rows and published synthetic rows of one modality, mixed
into one Parquet dataset for a classifier's training loop and published whole as ``ROOT/augmented/<mix_version>/``.

Inputs: the real rows of the curated split(s) (``train`` by default; ``val`` is the held-out split, see
``MixSpec``) and the synthetic rows of the published partitions ``ROOT/generated/date=D/`` (never the
refused rows under ``ROOT/rejects/``). ``synthetic_ratio`` is the share of synthetic rows; ``balance: per_label`` gives every label the
same number of rows, as many as the scarcest label allows at that ratio; ``max_rows`` caps the total.

Determinism: within its pool (and label), a row is picked when its hash of (seed, id) is among the smallest, so
the same inputs and settings give the same rows whatever the file layout or row order. Rows are written in the
order of a second hash, so real and synthetic rows are interleaved (a training loop still shuffles per epoch).
``mix_version`` hashes the curated version, each partition's file names and sizes (a re-generated date is a new
input) and the settings; a re-run with the same inputs finds its published folder and reuses it.

Accounting (nothing is dropped silently): the manifest counts every row read as excluded by a setting
(``other_modality``, ``other_model``, ``other_label``), selected (in the output) or not selected, checks
``read = excluded + available`` and ``available = selected + not_selected`` per pool, and counts the output's
rows back from the files.

Memory: selection reads small columns only (id, label, model, image geometry). The selected rows' content then
streams through in batches into hash-range buckets of about ``FILE_BYTES``, and each bucket is sorted alone, so
the driver holds about one output file at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from jobs.data import selection
from jobs.data.curated import label_key, resolve_dataset_version
from jobs.mix.spec import MixSpec
from jobs.store import layout, schema
from jobs.store.commit import commit, discard, staging_dir
from jobs.store.storage import Store

MIX_FORMAT = "1"  # bump when the same inputs and settings would select or write different rows
FILE_BYTES = 128 * 2**20  # about this much per output file
ROW_GROUP_BYTES = 32 * 2**20
BATCH_ROWS = 4096  # at most, per batch read (fewer for big images: about ROW_GROUP_BYTES a batch)
NO_LABEL = "(none)"  # manifest key of rows without a label (their `label` stays null in the data)


class MixError(ValueError):
    """Inputs or settings that cannot make a mixture; the message starts with the ``augment.*`` key to change."""


@dataclasses.dataclass
class MixResult:
    mix_version: str
    path: str
    counts: dict[str, Any]  # the manifest's counts
    manifest: dict[str, Any]
    seconds: float
    reused: bool  # the same inputs and settings were mixed before: the published folder was kept


@dataclasses.dataclass
class _Pool:
    """The candidate rows of one side of the mixture, small columns only."""

    files: dict[str, list[str]]  # where (a curated split or a run date) -> Parquet file paths
    rows: pd.DataFrame  # id, label key, where, and model / geometry columns; after the spec's filters
    counts: dict[str, int]  # read and excluded-by-setting counts
    bytes: int  # size of the files read


def build_mixture(spec: MixSpec, store: Store, dates: list[str] | None = None) -> MixResult:
    """Mixes, writes and publishes ``ROOT/augmented/<mix_version>/`` (or finds it published already).

    ``dates`` (the CLI's ``--date``) takes precedence over ``spec.dates``; with neither, the latest published
    partition is used. Raises ``MixError`` (a ``ValueError``) naming the ``augment.*`` key for inputs that cannot
    make a mixture."""
    started = time.time()
    try:
        curated = resolve_dataset_version(store, spec.dataset_version)
    except FileNotFoundError as exc:
        raise MixError(f"augment.dataset_version: {exc}") from None
    run_dates = _resolve_dates(store, dates or spec.dates)
    splits = ["train", "val"] if spec.split == "all" else [spec.split]
    real_files = {s: store.files(layout.curated(curated), s, suffix=".parquet") for s in splits}
    synthetic_files = {d: store.files(layout.generated(d), suffix=".parquet") for d in run_dates}
    sizes = _sizes(store, [f for fs in synthetic_files.values() for f in fs] + [f for fs in real_files.values() for f in fs])
    settings = {**spec.model_dump(), "dates": run_dates, "dataset_version": curated}
    generated = {d: [[f.rsplit("/", 1)[1], sizes[f]] for f in fs] for d, fs in synthetic_files.items()}
    mix_version = hashlib.sha256(json.dumps({"format": MIX_FORMAT, "schema": schema.SCHEMA_VERSION, "curated": curated,
                                             "generated": generated, "spec": settings}, sort_keys=True).encode()).hexdigest()[:12]
    target = layout.augmented(mix_version)
    if layout.published(store, layout.AUGMENTED, mix_version):
        manifest = store.read_json(layout.manifest(layout.AUGMENTED, mix_version))
        return MixResult(mix_version, store.display(target), manifest["counts"], manifest, time.time() - started, True)

    real = _read_pool(store, real_files, sizes, spec, synthetic=False)
    synthetic = _read_pool(store, synthetic_files, sizes, spec, synthetic=True)
    _check_pools(spec, curated, real, synthetic)
    real_pick, synthetic_pick = _select(spec, real.rows, synthetic.rows)

    staging = staging_dir(store, layout.AUGMENTED, mix_version)
    try:
        files = _write(store, staging, spec, curated, [(real, real_pick, False), (synthetic, synthetic_pick, True)])
        counts = _counts(real, synthetic, real_pick, synthetic_pick)
        written = sum(f["rows"] for f in files)
        if written != counts["rows"]:
            raise AssertionError(f"accounting broke: {counts['rows']} rows selected, {written} written")
        chosen = synthetic.rows[synthetic_pick]
        manifest = {
            "mix_version": mix_version, "schema_version": schema.SCHEMA_VERSION, "mix_format": MIX_FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(), "modality": spec.modality, "spec": settings,
            "sources": {
                "curated": {"dataset_version": curated, "splits": splits},
                "generated": [{"run_date": d, "files": generated[d],
                               "model_versions": {m: sorted(g["model_version"].dropna().unique().tolist())
                                                  for m, g in chosen[chosen["where"] == d].groupby("model_name")}}
                              for d in run_dates],
            },
            "counts": counts, "files": files,
        }
        commit(store, staging, layout.AUGMENTED, mix_version)
        store.write_json(manifest, layout.manifest(layout.AUGMENTED, mix_version))  # last: now it is published
    except BaseException:
        discard(store, staging)
        raise
    return MixResult(mix_version, store.display(target), counts, manifest, time.time() - started, False)


# ---- inputs --------------------------------------------------------------------------------------------

def _resolve_dates(store: Store, dates: list[str] | None) -> list[str]:
    published = layout.published_dates(store)
    if not dates:
        if not published:
            raise MixError(f"augment.dates: nothing generated under {store.display('generated')}; run `aigc generate` first")
        return published[-1:]
    for d in sorted(set(dates)):
        if d not in published:
            raise MixError(f"augment.dates: no published night {d} under {store.display('generated')} "
                             f"(published: {', '.join(published) or 'none'})")
    return sorted(set(dates))


def _sizes(store: Store, paths: list[str]) -> dict[str, int]:
    return {i.path: int(i.size) for i in store.fs.get_file_info(paths)} if paths else {}


def _read_pool(store: Store, files: dict[str, list[str]], sizes: dict[str, int], spec: MixSpec, synthetic: bool) -> _Pool:
    columns = ["id", "modality", "label"] + (["model_name", "model_version"] if synthetic else [])
    columns += ["width", "height", "mode"] if spec.modality == "image" else []
    parts = [pads.dataset(paths, filesystem=store.fs, format="parquet").to_table(columns=columns).to_pandas()
             .assign(where=where) for where, paths in files.items() if paths]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns + ["where"])
    counts = {"read": len(rows)}
    keep = rows["modality"] == spec.modality
    counts["other_modality"] = int((~keep).sum())
    rows = rows[keep]
    if synthetic:
        keep = rows["model_name"].isin(spec.models) if spec.models else pd.Series(True, index=rows.index)
        counts["other_model"] = int((~keep).sum())
        rows = rows[keep]
    rows = rows.assign(label=rows["label"].where(rows["label"].notna(), NO_LABEL).astype(str))
    keep = rows["label"].isin(spec.labels) if spec.labels else pd.Series(True, index=rows.index)
    counts["other_label"] = int((~keep).sum())
    return _Pool(files, rows[keep].drop(columns="modality").reset_index(drop=True), counts,
                 sum(sizes[f] for fs in files.values() for f in fs))


def _check_pools(spec: MixSpec, curated: str, real: _Pool, synthetic: _Pool) -> None:
    """One ``MixError`` naming the setting when a pool the ratio needs has nothing to give, or when images of
    different sizes would mix (a classifier's batch needs one shape)."""
    where = {False: f"curated {curated} ({'+'.join(real.files)})",
             True: f"generated {', '.join(synthetic.files)}"}
    needed = [(False, real)] * (spec.synthetic_ratio < 1) + [(True, synthetic)] * (spec.synthetic_ratio > 0)
    for is_synthetic, pool in needed:
        c = pool.counts
        if c["read"] - c["other_modality"] == 0:
            raise MixError(f"augment.modality: {where[is_synthetic]} holds no {spec.modality} rows ({c['read']} rows of other modalities)")
        if is_synthetic and c["read"] - c["other_modality"] - c["other_model"] == 0:
            raise MixError(f"augment.models: {where[True]} holds no {spec.modality} rows of {', '.join(spec.models or [])}")
        if pool.rows.empty:
            raise MixError(f"augment.labels: {where[is_synthetic]} holds no {spec.modality} rows labelled {', '.join(spec.labels or [])}")
    if spec.models:
        missing = sorted(set(spec.models) - set(synthetic.rows["model_name"]))
        if missing:
            raise MixError(f"augment.models: {where[True]} holds no {spec.modality} rows of {', '.join(missing)}")
    if spec.modality == "image":
        shapes: dict[str, set[str]] = {}
        for is_synthetic, pool in needed:
            for (w, h, m, by), _ in pool.rows.groupby(["width", "height", "mode", "model_name" if is_synthetic else "where"]):
                shapes.setdefault(f"{int(w)}x{int(h)} {m}", set()).add(f"model {by}" if is_synthetic else where[False])
        if len(shapes) > 1:
            seen = "; ".join(f"{shape}: {', '.join(sorted(by))}" for shape, by in sorted(shapes.items()))
            raise MixError(f"augment.models: images of different sizes would mix ({seen}); pick augment.models and "
                             "augment.dates whose images match the curated ones")


# ---- selection -----------------------------------------------------------------------------------------

def split_count(n: int, ratio: float) -> tuple[int, int]:
    """(real, synthetic) rows of ``n`` at ``ratio`` synthetic, rounding half up."""
    synthetic = math.floor(ratio * n + 0.5)
    return n - synthetic, synthetic


def largest_mix(ratio: float, real: int, synthetic: int, cap: int | None = None) -> int:
    """The most rows whose split at ``ratio`` fits ``real`` and ``synthetic`` available rows (and ``cap``).
    Both parts of ``split_count`` grow with n, so what fits is a prefix of 0, 1, 2, ... : a binary search."""
    lo, hi = 0, real + synthetic if cap is None else min(cap, real + synthetic)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        r, s = split_count(mid, ratio)
        lo, hi = (mid, hi) if r <= real and s <= synthetic else (lo, mid - 1)
    return lo


def _select(spec: MixSpec, real: pd.DataFrame, synthetic: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the picked rows of each pool."""
    ratio = spec.synthetic_ratio
    if spec.balance == "none":
        n = largest_mix(ratio, len(real), len(synthetic), spec.max_rows)
        n_real, n_synthetic = split_count(n, ratio)
        return _smallest(real, spec.seed, n_real), _smallest(synthetic, spec.seed, n_synthetic)
    real_by = real["label"].value_counts().to_dict()
    synthetic_by = synthetic["label"].value_counts().to_dict()
    needed = ([real_by] if ratio < 1 else []) + ([synthetic_by] if ratio > 0 else [])
    labels = sorted(set().union(*needed), key=label_key)
    fits = {l: largest_mix(ratio, real_by.get(l, 0), synthetic_by.get(l, 0)) for l in labels}
    scarcest = min(labels, key=lambda l: fits[l])
    k = fits[scarcest] if spec.max_rows is None else min(fits[scarcest], spec.max_rows // len(labels))
    if k == 0 and fits[scarcest] == 0:
        raise MixError(f"augment.balance: label {scarcest!r} has {real_by.get(scarcest, 0)} real and "
                         f"{synthetic_by.get(scarcest, 0)} synthetic rows, too few for one row at synthetic_ratio "
                         f"{ratio}; list the labels to mix in augment.labels, or set augment.balance: none")
    if k == 0:
        raise MixError(f"augment.max_rows: {spec.max_rows} rows cannot hold one row of each of {len(labels)} labels")
    n_real, n_synthetic = split_count(k, ratio)
    return (_smallest(real, spec.seed, {l: n_real for l in labels}),
            _smallest(synthetic, spec.seed, {l: n_synthetic for l in labels}))


def _smallest(rows: pd.DataFrame, seed: int, n: int | dict[str, int]) -> np.ndarray:
    """Mask of the ``n`` rows (per label, for a dict) whose hashes of (seed, id) are the smallest."""
    return selection.pick(rows["id"].tolist(), seed, n, rows["label"].tolist())


# ---- output --------------------------------------------------------------------------------------------

def _write(store: Store, staging: str, spec: MixSpec, curated: str, pools: list[tuple[_Pool, np.ndarray, bool]]) -> list[dict]:
    """Streams the picked rows' content into hash-range buckets, then writes each bucket sorted by that hash
    as one ``part-NNNNN.parquet``. Returns the files with their rows and sha256."""
    out = schema.augmented(spec.modality)
    plain = out.remove_metadata()
    content = ["image", "width", "height", "mode"] if spec.modality == "image" else ["text"]
    n_rows = sum(int(pick.sum()) for _, pick, _ in pools)
    est_bytes = sum(pool.bytes * int(pick.sum()) / max(pool.counts["read"], 1) for pool, pick, _ in pools)
    n_files = max(1, math.ceil(est_bytes / FILE_BYTES))
    row_bytes = max(est_bytes / max(n_rows, 1), 1)
    row_group = max(1024, int(ROW_GROUP_BYTES / row_bytes))
    batch_rows = max(16, min(BATCH_ROWS, int(ROW_GROUP_BYTES / row_bytes)))  # big images: fewer rows per batch
    buckets: dict[int, str] = {}
    with contextlib.ExitStack() as stack:
        writers: dict[int, pq.ParquetWriter] = {}
        for pool, pick, is_synthetic in pools:
            chosen = pool.rows[pick]
            for where, group in chosen.groupby("where", sort=True):
                columns = ["id", "label", *content] + (["model_name", "model_version", "seed", "dataset_version"] if is_synthetic else [])
                fixed = ({"is_synthetic": True, "source": f"generated:{where}"} if is_synthetic else
                         {"is_synthetic": False, "source": f"curated:{curated}", "dataset_version": curated})
                dataset = pads.dataset(pool.files[where], filesystem=store.fs, format="parquet")
                for batch in dataset.to_batches(columns=columns, filter=pc.field("id").isin(group["id"].tolist()),
                                                batch_size=batch_rows, batch_readahead=2, fragment_readahead=1):
                    if not batch.num_rows:
                        continue
                    table = _shape(batch, plain, fixed)
                    order = selection.row_hash("order", spec.seed, table.column("id").to_pylist())
                    bucket = ((order >> np.uint64(32)) * np.uint64(n_files)) >> np.uint64(32)
                    table = table.append_column("_order", pa.array(order, type=pa.uint64()))
                    for b in np.unique(bucket).tolist():
                        if b not in writers:
                            buckets[b] = f"{staging}/_buckets/{b:05d}.parquet"
                            store.makedirs(f"{staging}/_buckets")
                            sink = stack.enter_context(store.fs.open_output_stream(store.path(buckets[b])))
                            writers[b] = stack.enter_context(pq.ParquetWriter(sink, table.schema))
                        writers[b].write_table(table.filter(pa.array(bucket == b)))
    files = []
    for b, path in sorted(buckets.items()):
        table = pq.read_table(store.path(path), filesystem=store.fs)
        table = table.sort_by([("_order", "ascending"), ("id", "ascending")]).drop_columns(["_order"])
        buf = pa.BufferOutputStream()
        pq.write_table(table.cast(plain).replace_schema_metadata(out.metadata), buf, row_group_size=row_group)
        data = buf.getvalue().to_pybytes()
        name = f"part-{b:05d}.parquet"
        store.write_bytes(data, staging, name)
        files.append({"path": name, "rows": pq.read_metadata(pa.BufferReader(data)).num_rows,
                      "sha256": hashlib.sha256(data).hexdigest()})
    store.delete(staging, "_buckets")
    return files


def _shape(batch: pa.RecordBatch, out: pa.Schema, fixed: dict[str, Any]) -> pa.Table:
    """A batch read from curated or generated files -> the augmented schema's columns, in order."""
    names = batch.schema.names
    arrays = [pa.array([fixed[f.name]] * batch.num_rows, type=f.type) if f.name in fixed
              else batch.column(names.index(f.name)).cast(f.type) if f.name in names
              else pa.nulls(batch.num_rows, f.type) for f in out]
    return pa.Table.from_arrays(arrays, schema=out)


def _counts(real: _Pool, synthetic: _Pool, real_pick: np.ndarray, synthetic_pick: np.ndarray) -> dict[str, Any]:
    """The manifest's counts; raises ``AssertionError`` if they do not add up."""
    def side(pool: _Pool, pick: np.ndarray) -> dict[str, Any]:
        rows = pool.rows.assign(selected=pick)
        c: dict[str, Any] = {**pool.counts, "available": len(rows), "selected": int(pick.sum()),
                             "not_selected": int((~pick).sum())}
        by = rows.groupby("label")["selected"].agg(["size", "sum"])
        c["by_label"] = {l: {"available": int(r["size"]), "selected": int(r["sum"]), "not_selected": int(r["size"] - r["sum"])}
                         for l, r in sorted(by.iterrows(), key=lambda kv: label_key(kv[0]))}
        c["by_source"] = {w: {"available": int(r["size"]), "selected": int(r["sum"])}
                          for w, r in rows.groupby("where")["selected"].agg(["size", "sum"]).iterrows()}
        if "model_name" in rows:
            c["by_model"] = {m: {"available": int(r["size"]), "selected": int(r["sum"])}
                             for m, r in rows.groupby("model_name")["selected"].agg(["size", "sum"]).iterrows()}
        excluded = sum(v for k, v in pool.counts.items() if k.startswith("other_"))
        if c["read"] != excluded + c["available"] or c["available"] != c["selected"] + c["not_selected"]:
            raise AssertionError(f"accounting broke: {c}")
        return c

    r, s = side(real, real_pick), side(synthetic, synthetic_pick)
    labels = sorted(set(r["by_label"]) | set(s["by_label"]), key=label_key)
    by_label = {l: {"real": r["by_label"].get(l, {}).get("selected", 0), "synthetic": s["by_label"].get(l, {}).get("selected", 0)}
                for l in labels}
    rows = r["selected"] + s["selected"]
    return {"rows": rows, "real": r["selected"], "synthetic": s["selected"],
            "synthetic_share": round(s["selected"] / rows, 6) if rows else 0.0,
            "by_label": {l: v for l, v in by_label.items() if v["real"] or v["synthetic"]},
            "inputs": {"real": r, "synthetic": s}, "reconciled": True}
