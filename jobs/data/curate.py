"""Preprocessing on Ray Data: read sources, clean every unit, deduplicate, split, version, publish.

Each source is first staged as raw-unit Parquet files (``jobs.data.sources.stage_source``: paths and small
fields; image bytes are read later, inside the cleaning tasks). Ray Data reads those files and cleans them in
parallel (``jobs.data.batches``). Only compact keys of the accepted units (id, content hash, near-duplicate
hash, position: about 60 bytes each) come back to the driver for deduplication and versioning
(``jobs.data.dedup``); the counts are summed per batch in Ray tasks.

Every input unit ends in exactly one place: the curated ``train``/``val`` rows or the ``rejects`` table
with a stable reason code. The manifest records the counts and checks ``inputs == accepted + rejected``.

The dataset version is a content hash of the accepted rows (ids and content hashes) and the
preprocessing settings, so the same inputs always give the same version and re-running is a no-op.

Layout (``jobs.store.layout``): ``ROOT/curated/<version>/{train,val}/*.parquet`` (the dataset root: rows only),
``ROOT/rejects/curated/<version>/*.parquet``, ``ROOT/manifests/curated/<version>.json`` (written last: a version
without it is not published) and ``ROOT/manifests/curated/latest.json``, which names the newest version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import ray

from jobs.data.batches import TALLY_KEYS, clean_batch, curated_part, finalise_batch, rejects_part, tally_batch
from jobs.data.curated import label_key, manifest, point_latest
from jobs.data.dedup import UnitKeys, dataset_version, find_duplicates
from jobs.data.sources import stage_source
from jobs.data.spec import PreprocessSpec, Source
from jobs.store import layout, schema
from jobs.store.commit import commit, discard, resumable_staging, staging_dir
from jobs.store.paths import PathPolicy
from jobs.store.rejects import check_error_budget
from jobs.store.storage import Store


@dataclass
class PreprocessResult:
    dataset_version: str
    path: str
    counts: dict[str, Any]
    seconds: float
    reused: bool


def run_preprocess(sources: list[Source], spec: PreprocessSpec, store: Store, staging: str | None = None,
                   policy: PathPolicy = PathPolicy()) -> PreprocessResult:
    """Cleans, deduplicates, splits, versions and publishes. ``staging`` names a folder where
    ``stage_source`` already wrote each source's raw units (the Prefect flow does that, one task per
    source); without it the sources are staged here, one after the other."""
    start = time.time()
    own_staging = staging is None
    if own_staging:
        staging = staging_dir(store, "curated", "raw")
        for i, source in enumerate(sources):
            stage_source(source, i, store, staging, policy)
    try:
        cleaned, duplicates, version, counts = _clean(sources, spec, store, staging)
        if layout.published(store, layout.CURATED, version):
            point_latest(store, version)
            return PreprocessResult(version, store.display(layout.curated(version)), manifest(store, version)["counts"],
                                    time.time() - start, reused=True)
        _write_version(cleaned, duplicates, version, counts, sources, spec, store)
        point_latest(store, version)
        return PreprocessResult(version, store.display(layout.curated(version)), counts, time.time() - start, reused=False)
    finally:
        if own_staging:
            discard(store, staging)


RAW = "night-raw"  # a night's raw staging: staging/curated/night-raw.<date>.<key>


def raw_staging(store: Store, run_date: str | None = None, key: str | None = None) -> str:
    """Where the sources' raw units are staged before curation: a fresh folder, or a night's (``run_date`` and
    ``key``, a hash of what the reads depend on), kept until the night ends so that a re-run reads only the sources
    whose reads are not cached. A folder of the same night with another key (the config changed) can never be
    read again and is deleted."""
    if run_date is None:
        return staging_dir(store, layout.CURATED, "raw")
    return resumable_staging(store, layout.CURATED, f"{RAW}.{run_date}", key or "")[0]


def prune_raw_staging(store: Store, run_date: str | None, older_than_s: float) -> list[str]:
    """Deletes the raw staging of the night ``run_date`` (it ended: nothing reads it again; None: keep it), and
    that of other nights when all its files are older than ``older_than_s`` seconds (their cached reads have
    expired). Returns what it deleted."""
    cutoff, gone = time.time() - older_than_s, []
    for entry in store.listdir(layout.staging_area(layout.CURATED)):
        if not entry.startswith(f"{RAW}."):
            continue
        folder = f"{layout.staging_area(layout.CURATED)}/{entry}"
        files = store.files(folder)
        infos = store.fs.get_file_info(files) if files else []
        stale = all(i.mtime is not None and i.mtime.timestamp() < cutoff for i in infos)
        if (run_date is not None and entry.startswith(f"{RAW}.{run_date}.")) or stale:
            store.delete(folder)
            gone.append(folder)
    return gone


def _clean(sources: list[Source], spec: PreprocessSpec, store: Store,
           staging: str) -> tuple[ray.data.Dataset, dict[str, str], str, dict[str, Any]]:
    """Cleans the staged raw units and decides everything but the files: (cleaned rows, duplicates, version,
    counts). Fails on an empty input or a blown error budget before anything is written."""
    raw_files = store.files(staging, "raw", suffix=".parquet")
    n_inputs = sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in raw_files)
    if n_inputs == 0:
        raise ValueError("the sources hold no input units")
    cleaned = (ray.data.read_parquet(raw_files, filesystem=store.fs)
               .map_batches(clean_batch, fn_kwargs={"opts": spec}, batch_format="pandas", batch_size=256)
               .materialize())
    keys = UnitKeys.collect(cleaned)
    duplicates = find_duplicates(keys, spec)  # id -> reject detail
    version = dataset_version(keys, duplicates, spec.model_dump())
    del keys
    tally = (cleaned.select_columns(["id", "source", "modality", "label", "status", "reason", "detail", "encoding"])
             .map_batches(tally_batch, fn_kwargs={"duplicates": duplicates, "opts": spec}, batch_format="pandas")
             .to_pandas().groupby(TALLY_KEYS)["n"].sum())
    counts = _counts(tally, n_inputs, sources, spec)
    check_error_budget("preprocess.max_reject_share", counts["rejected"], n_inputs, counts["by_reason"],
                       spec.max_reject_share, "inputs")
    return cleaned, duplicates, version, counts


def _write_version(cleaned: ray.data.Dataset, duplicates: dict[str, str], version: str, counts: dict[str, Any],
                   sources: list[Source], spec: PreprocessSpec, store: Store) -> None:
    """Writes the splits and the rejects in staging, commits both, then the manifest (last: now it is published)."""
    final = cleaned.map_batches(finalise_batch, fn_kwargs={"duplicates": duplicates, "opts": spec},
                                batch_format="pyarrow").materialize()
    staging = staging_dir(store, layout.CURATED, version)
    rejects = staging_dir(store, "rejects/curated", version)
    try:
        for split in ("train", "val"):
            store.makedirs(staging, split)
            if counts[split]:
                (final.map_batches(curated_part, fn_kwargs={"split": split}, batch_format="pyarrow")
                 .write_parquet(store.path(staging, split), filesystem=store.fs))
        if counts["rejected"]:
            (final.map_batches(rejects_part, batch_format="pandas")
             .write_parquet(store.path(rejects), filesystem=store.fs))
        files = [store.relpath(p, staging) for p in store.files(staging, suffix=".parquet")] + \
                [f"rejects/{store.relpath(p, rejects)}" for p in store.files(rejects, suffix=".parquet")]
        record = {"dataset_version": version, "schema_version": schema.SCHEMA_VERSION,
                  "created_at": datetime.now(timezone.utc).isoformat(), "sources": [s.model_dump() for s in sources],
                  "preprocess": spec.model_dump(), "counts": counts, "labels": list(counts["by_label"]), "files": files}
        commit(store, rejects, "rejects/curated", version)
        commit(store, staging, layout.CURATED, version)
        store.write_json(record, layout.manifest(layout.CURATED, version))
    except BaseException:
        discard(store, staging)
        discard(store, rejects)
        raise


def _counts(tally: pd.Series, n_inputs: int, sources: list[Source], spec: PreprocessSpec) -> dict[str, Any]:
    """The manifest's counts from the summed tally (a Series indexed by ``TALLY_KEYS``, "" for none)."""
    t = tally.reset_index()
    accepted, rejected = t[t["split"] != "rejects"], t[t["split"] == "rejects"]

    def by(frame: pd.DataFrame, key: str) -> dict[str, int]:
        sums = frame[frame[key] != ""].groupby(key)["n"].sum()
        return {str(k): int(v) for k, v in sums.items()}

    counts: dict[str, Any] = {
        "inputs": n_inputs,
        "accepted": int(accepted["n"].sum()),
        "rejected": int(rejected["n"].sum()),
        "train": int(t.loc[t["split"] == "train", "n"].sum()),
        "val": int(t.loc[t["split"] == "val", "n"].sum()),
        "by_source": {},
        "by_reason": dict(sorted(by(rejected, "reason").items())),
        "blocked_terms": dict(sorted(by(rejected, "term").items())),
        "by_label": dict(sorted(by(accepted, "label").items(), key=lambda kv: label_key(kv[0]))),
        "by_modality": dict(sorted(by(accepted, "modality").items())),
    }
    for s in sources:
        mine = t[t["source"] == s.source_id]
        counts["by_source"][s.source_id] = {"inputs": int(mine["n"].sum()),
                                            "accepted": int(mine.loc[mine["split"] != "rejects", "n"].sum()),
                                            "rejected": int(mine.loc[mine["split"] == "rejects", "n"].sum())}
        if by(mine, "encoding"):
            counts["by_source"][s.source_id]["by_encoding"] = dict(sorted(by(mine, "encoding").items()))
    counts["augmented"] = int(t.loc[(t["split"] == "train") & (t["modality"] == "image"), "n"].sum()) * spec.augment.copies
    counts["balanced"] = counts["inputs"] == counts["accepted"] + counts["rejected"]
    if not counts["balanced"]:
        raise AssertionError(f"accounting broke: {counts['inputs']} inputs != {counts['accepted']} + {counts['rejected']}")
    return counts
