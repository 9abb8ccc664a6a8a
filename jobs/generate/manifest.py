"""A night's manifest, and the steps that settle a staged night: publish it whole, or drop it.

The manifest (``ROOT/manifests/generated/D.json``, written last) is what the pipeline trusts about a night:
counts read back from the files (generated = published + rejected), checksums, each model's lineage, the
filters, the top-up rounds, how the rows spread over the sampling actors, timings and, after the gate, its
figures. A re-run of the same work finds it (``published_unchanged``) and regenerates nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.generate.plan import NightRun
from jobs.generate.spec import FilterSpec
from jobs.generate.staging import ACTORS, REJECTED, NightStaging
from jobs.store import layout, schema
from jobs.store.commit import commit
from jobs.store.credentials import Signer
from jobs.store.storage import Store


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
    staging: str | None = None  # store path of the staged partition while it waits for the gate (publish_now=False)
    reused: bool = False  # the date was already published from exactly this work: nothing was regenerated


def _actors(staging: NightStaging) -> dict[str, Any]:
    """How the night's rows spread over the sampling actors (a resumed night counts the killed run's too): a
    pool that ran one actor, or one that did nearly all the rows, shows here."""
    store = staging.store
    stats = [store.read_json(store.relpath(f)) for f in store.files(staging.path, ACTORS, suffix=".json")]
    return {"generators": len(stats), "nodes": len({s["node"] for s in stats}),
            "rows_per_generator": sorted((s["rows"] for s in stats), reverse=True),
            "devices": sorted({s["device"] for s in stats})}


def _files(staging: NightStaging, tallies: dict[str, Counter]) -> list[dict[str, Any]]:
    """Each accepted-rows file with its rows, bytes and sha256; ``tallies`` count its columns' values (in Arrow:
    no Python object per row, so memory stays flat)."""
    store, files = staging.store, []
    for path in staging.files():
        digest, size = hashlib.sha256(), 0
        with store.fs.open_input_stream(path) as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
                size += len(chunk)
        meta = pq.read_metadata(path, filesystem=store.fs)
        files.append({"path": store.relpath(path, staging.path), "rows": meta.num_rows, "bytes": size,
                      "row_groups": meta.num_row_groups, "sha256": digest.hexdigest()})
        t = pq.read_table(path, columns=list(tallies), filesystem=store.fs)
        for c, counter in tallies.items():
            counter.update({v["values"]: v["counts"] for v in pc.value_counts(t.column(c)).to_pylist()
                            if v["values"] is not None})
    return files


def build_manifest(staging: NightStaging, cells: pd.DataFrame, run: NightRun, generated: int, seconds: float,
                   rounds: list[int], resume: dict | None, filters: FilterSpec, signer: Signer | None = None) -> dict[str, Any]:
    """Counts and checksums of what was written, read back from the files batch by batch (flat memory)."""
    tallies = {c: Counter() for c in ("modality", "model_name", "request_id", "label")}
    files = _files(staging, tallies)
    reasons: Counter = Counter()
    for path in staging.files(rejected=True):
        reasons.update({v["values"]: v["counts"] for v in pc.value_counts(
            pq.read_table(path, columns=["reason"], filesystem=staging.store.fs).column("reason")).to_pylist()})
    targets: Counter = Counter()
    for cell in cells.itertuples(index=False):
        targets[cell.request_id] += int(cell.n)
    got = tallies["request_id"]
    return {
        "run_id": run.run_id, "run_date": run.run_date, "fingerprint": run.fingerprint,
        "schema_version": schema.GENERATED_SCHEMA_VERSION, "created_at": datetime.now(timezone.utc).isoformat(),
        "requested": int(cells["n"].sum()), "generated": generated, "rows": sum(f["rows"] for f in files),
        "rejected": sum(reasons.values()), "rejected_by_reason": dict(sorted(reasons.items())),
        "by_modality": dict(sorted(tallies["modality"].items())), "by_model": dict(sorted(tallies["model_name"].items())),
        "by_request": dict(sorted(got.items())), "by_label": dict(sorted(tallies["label"].items())),
        "short_of_request": {r: n - got.get(r, 0) for r, n in sorted(targets.items()) if got.get(r, 0) < n},
        "filters": filters.model_dump(), "top_up": {"rounds": len(rounds), "extra_rows": sum(rounds), "per_round": rounds},
        "resumed": resume, "models": run.lineage(), "files": files, "actors": _actors(staging),
        "credentials": signer.describe() if signer else {"signed": False},
        "timings": {"generate_seconds": round(seconds, 3), "rows_per_second": round(generated / max(seconds, 1e-9), 2)},
    }


def published_unchanged(store: Store, run_date: str, key: str, run_id: str) -> dict[str, Any] | None:
    """The manifest of the night ``run_date`` when it was published from the work fingerprinted ``key`` and its
    files are all still there at their recorded sizes; else None (generate it)."""
    if not store.exists(layout.manifest(layout.GENERATED, run_date)):
        return None
    partition = layout.generated(run_date)
    manifest = store.read_json(layout.manifest(layout.GENERATED, run_date))
    if manifest.get("fingerprint") != key or manifest.get("run_id") != run_id:
        return None
    listed = {f["path"]: f["bytes"] for f in manifest["files"]}
    infos = store.fs.get_file_info([store.path(partition, p) for p in listed])
    if any(i.size != size for i, size in zip(infos, listed.values())):
        return None
    present = {store.relpath(f, partition) for f in store.files(partition, suffix=".parquet")}
    return manifest if present == set(listed) else None


def publish_night(store: Store, result: GenerateResult, extra: dict[str, Any] | None = None,
                  signer: Signer | None = None) -> GenerateResult:
    """Makes a staged night visible: its rejects, then its rows, then its manifest (with ``extra`` sections such
    as the gate's figures). Earlier partitions are never touched; the same date is replaced whole.

    With a ``signer`` the manifest gets a detached signature (``D.json.sig``, written just before it): the
    manifest pins every file's sha256, so the signature covers every row's lineage, text rows included."""
    partition = layout.night(result.run_date)
    staging_path = result.staging
    if staging_path is None:
        raise ValueError(f"{partition} is already published")
    store.delete(staging_path, ACTORS)
    if store.exists(staging_path, REJECTED):
        commit(store, f"{staging_path}/{REJECTED}", "rejects/generated", partition)
    else:
        store.delete(layout.rejects(layout.GENERATED, layout.night(result.run_date)))  # a re-run without rejects leaves none behind
    commit(store, staging_path, layout.GENERATED, partition)
    manifest = {**result.manifest, **(extra or {})}
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    target = layout.manifest(layout.GENERATED, result.run_date)
    if signer is not None:
        store.write_json(signer.sign_detached(data, target.rsplit("/", 1)[-1]), signature_path(target))
    else:
        store.delete(signature_path(target))  # an unsigned re-run leaves no stale signature beside its manifest
    store.write_bytes(data, target)
    store.delete(f"{staging_path}.progress.json")
    return dataclasses.replace(result, manifest=manifest, staging=None)


def signature_path(manifest_path: str) -> str:
    """Where a manifest's detached signature lies: beside it, ``D.json.sig`` (not ``.json``: no manifest reader
    lists it)."""
    return f"{manifest_path}.sig"


def discard_night(store: Store, result: GenerateResult) -> None:
    """Drops a staged night the gate refused (and its resume state: a re-run generates it anew)."""
    if result.staging:
        NightStaging(store, result.staging).discard()
