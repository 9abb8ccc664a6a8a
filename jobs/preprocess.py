"""Preprocessing on Ray Data: read sources, clean every unit, deduplicate, split, version, publish.

Each source is first staged as raw-unit Parquet files (``sources.stage_source``: paths and small fields;
image bytes are read later, inside the cleaning tasks). Ray Data reads those files and cleans them in
parallel. Only compact keys of the accepted units (id, content hash, near-duplicate hash, position: about
60 bytes each) come back to the driver for deduplication and versioning; the counts are summed per batch
in Ray tasks.

Every input unit ends in exactly one place: the curated ``train``/``val`` rows or the ``rejects`` table
with a stable reason code. The manifest records the counts and checks ``inputs == accepted + rejected``.

The dataset version is a content hash of the accepted rows (ids and content hashes) and the
preprocessing settings, so the same inputs always give the same version and re-running is a no-op.

Layout (``jobs.layout``): ``ROOT/curated/<version>/{train,val}/*.parquet`` (the dataset root: rows only),
``ROOT/rejects/curated/<version>/*.parquet``, ``ROOT/manifests/curated/<version>.json`` (written last: a version
without it is not published) and ``ROOT/manifests/curated/latest.json``, which names the newest version.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from . import entries, layout, schema
from .augment import augment, copy_id
from .cleaning import BACKGROUNDS, Reject, normalise_image, normalise_text
from .dedup import dhash, first_of_groups, near_image_duplicates, text_key
from .images import decode_png, encode_png
from .publish import discard, publish, staging_dir
from .sources import stage_source
from .paths import PathPolicy
from .specs import PreprocessSpec, Source, check_error_budget
from .storage import Store



@dataclass
class PreprocessResult:
    dataset_version: str
    path: str
    counts: dict[str, Any]
    seconds: float
    reused: bool


def row_id(source: str, input_ref: str) -> str:
    return hashlib.sha256(f"{source}|{input_ref}".encode()).hexdigest()[:20]


def split_of(row_id_: str, val_fraction: float, salt: str) -> str:
    """Deterministic from the id alone, so adding rows never moves existing rows between splits."""
    h = int(hashlib.sha256(f"{salt}|{row_id_}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


# ---- per-batch cleaning (runs in Ray Data tasks) -------------------------------------------------

def clean_batch(df: pd.DataFrame, spec: dict[str, Any]) -> pa.Table:
    """Raw units -> curated-schema rows plus ``status``/``reason``/``detail`` (rejected units keep their id)."""
    opts = PreprocessSpec(**spec)
    out: dict[str, list] = {f.name: [] for f in schema.CURATED}
    out.update(status=[], stage=[], reason=[], detail=[], near_key=[], position=[], encoding=[])
    for row in df.itertuples(index=False):
        rid = row_id(row.source, row.input_ref)
        image, text, reason, detail, stage = None, None, None, None, None
        width = height = mode = None
        digest = near = None
        try:
            known = schema.scalar(row.reject)
            if known:  # decided while reading the source (hidden, links, file types, paths, unreadable)
                stage = "ingest"
                raise Reject(*known.split(":", 1))
            if row.modality == "image":
                arr = normalise_image(_image_bytes(row), opts)
                image = {"bytes": encode_png(arr), "path": None}
                caption = schema.scalar(row.text)
                text = normalise_text(caption, opts.model_copy(update={"min_text_chars": 1})) if caption else None
                height, width, mode = arr.shape[0], arr.shape[1], "L" if opts.channels == 1 else "RGB"
                digest = hashlib.sha256(arr.tobytes()).hexdigest()
                near = f"{dhash(arr):016x}"
            else:
                text = normalise_text(schema.scalar(row.text), opts)
                digest = hashlib.sha256(text.casefold().encode()).hexdigest()
                near = hashlib.sha256(text_key(text).encode()).hexdigest()[:32]
        except Reject as r:
            reason, detail, stage = r.reason, r.detail, stage or "clean"
        for key, value in (("id", rid), ("source", row.source), ("input_ref", row.input_ref),
                           ("modality", row.modality), ("label", None if schema.scalar(row.label) is None else str(row.label)),
                           ("image", image), ("width", width), ("height", height), ("mode", mode), ("text", text),
                           ("content_sha256", digest if reason is None else None),
                           ("split", None), ("attributes", schema.scalar(row.attributes)), ("augmented_from", None), ("status", "rejected" if reason else "ok"), ("stage", stage), ("reason", reason),
                           ("detail", detail), ("near_key", near if reason is None else None),
                           ("position", int(row.position)), ("encoding", schema.scalar(row.encoding))):
            out[key].append(value)
    fields = (list(schema.CURATED) + [pa.field(n, pa.string()) for n in ("status", "stage", "reason", "detail", "near_key")]
              + [pa.field("position", pa.int64()), pa.field("encoding", pa.string())])
    return schema.table(out, pa.schema(fields))


MAX_IMAGE_FILE_BYTES = 256 << 20  # a larger image file is a ``too_large`` reject, never read whole


def _image_bytes(row: Any) -> bytes | None:
    """The unit's bytes: inline, or read from its path or URI here (in the Ray task, not on the driver)."""
    payload = schema.scalar(row.payload)
    path = schema.scalar(row.path)
    if payload is None and path:
        try:
            if "://" in path:
                import pyarrow.fs as pafs

                fs, inner = pafs.FileSystem.from_uri(path)
                with fs.open_input_stream(inner) as f:
                    return f.read()
            return entries.read_regular(path, MAX_IMAGE_FILE_BYTES)  # not a FIFO put there since listing, not changing
        except entries.Unreadable as exc:
            raise Reject(exc.reason, exc.detail) from None
        except (OSError, ValueError) as exc:
            raise Reject("unreadable", f"{type(exc).__name__}: {exc}") from None
    return bytes(payload) if payload is not None else None


def mark_batch(df: pd.DataFrame, duplicates: dict[str, str], opts: PreprocessSpec) -> pd.DataFrame:
    """Marks duplicates as rejects and assigns the split of every accepted row (``rejects`` for the rest)."""
    dup = df["id"].map(duplicates)
    is_dup = dup.notna() & (df["status"] == "ok")
    if is_dup.any():
        df.loc[is_dup, "status"] = "rejected"
        df.loc[is_dup, "stage"] = "dedup"
        df.loc[is_dup, "reason"] = "duplicate"
        df.loc[is_dup, "detail"] = [str(d) for d in dup[is_dup]]
    ok = df["status"] == "ok"
    df["split"] = np.where(ok, [split_of(i, opts.val_fraction, opts.split_salt) for i in df["id"]], "rejects")
    return df


def finalise_batch(table: pa.Table, duplicates: dict[str, str], spec: dict[str, Any]) -> pa.Table:
    """Marked rows plus the augmented copies of the train images."""
    opts = PreprocessSpec(**spec)
    df = mark_batch(table.to_pandas(), duplicates, opts)
    if opts.augment.copies:
        df = pd.concat([df, _augmented_rows(df[(df["split"] == "train") & (df["modality"] == "image")], opts)],
                       ignore_index=True)
    return pa.Table.from_pandas(df, schema=table.schema, preserve_index=False)


TALLY_KEYS = ["source", "split", "reason", "label", "modality", "encoding", "term"]


def tally_batch(df: pd.DataFrame, duplicates: dict[str, str], spec: dict[str, Any]) -> pd.DataFrame:
    """Row counts of one batch per (source, split, reason, label, modality, encoding, blocked term): the
    driver adds these up, so counting needs no per-unit state there."""
    df = mark_batch(df, duplicates, PreprocessSpec(**spec))
    blocked = df["reason"].eq("blocked_term").fillna(False).astype(bool)
    df["term"] = None
    df.loc[blocked, "term"] = [str(d).removeprefix("blocked_term=") for d in df.loc[blocked, "detail"]]
    df = df[TALLY_KEYS].astype(object).where(df[TALLY_KEYS].notna(), "")
    return df.groupby(TALLY_KEYS).size().reset_index(name="n")


def _augmented_rows(train_images: pd.DataFrame, opts: PreprocessSpec) -> pd.DataFrame:
    """``augment.copies`` new train rows per accepted train image; val rows are never augmented."""
    rows = []
    for row in train_images.to_dict("records"):
        arr = decode_png(row["image"]["bytes"])
        for k in range(opts.augment.copies):
            out = augment(arr, opts.augment, row["id"], k, BACKGROUNDS[opts.background])
            rows.append({**row, "id": copy_id(row["id"], k), "input_ref": f"{row['input_ref']}#aug{k}",
                         "image": {"bytes": encode_png(out), "path": None}, "near_key": None,
                         "content_sha256": hashlib.sha256(out.tobytes()).hexdigest(), "augmented_from": row["id"]})
    return pd.DataFrame(rows, columns=train_images.columns)


@dataclass
class UnitKeys:
    """Keys of the units that passed cleaning, packed into fixed-size arrays (about 60 bytes a unit, in
    input order), so the driver can deduplicate and version millions of units."""

    ids: np.ndarray  # S20 row ids
    image: np.ndarray  # bool
    content: np.ndarray  # [N, 2] uint64: the first 128 bits of the content hash
    near: np.ndarray  # [N, 2] uint64: the dHash (images, low word) or 128 bits of the text-key hash
    position: np.ndarray  # int64

    @classmethod
    def collect(cls, cleaned: ray.data.Dataset) -> "UnitKeys":
        parts = []
        columns = ["id", "status", "modality", "content_sha256", "near_key", "position"]
        for b in cleaned.select_columns(columns).iter_batches(batch_format="pandas", batch_size=4096):
            b = b[b["status"] == "ok"]
            parts.append((np.array(b["id"].tolist(), dtype="S20"), (b["modality"] == "image").to_numpy(bool),
                          _words(b["content_sha256"]), _words(b["near_key"]), b["position"].to_numpy(np.int64)))
        if not parts:
            return cls(np.zeros(0, "S20"), np.zeros(0, bool), np.zeros((0, 2), np.uint64), np.zeros((0, 2), np.uint64),
                       np.zeros(0, np.int64))
        ids, image, content, near, position = (np.concatenate(a) for a in zip(*parts))
        order = np.lexsort((ids, position))  # input order; ids break ties
        return cls(ids[order], image[order], content[order], near[order], position[order])


def _words(hexes: pd.Series) -> np.ndarray:
    """Hex digests -> [N, 2] uint64 (their first 128 bits; shorter ones are zero-padded on the left)."""
    raw = bytes.fromhex("".join(h[:32].rjust(32, "0") for h in hexes))
    return np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)


def find_duplicates(keys: UnitKeys, spec: PreprocessSpec) -> dict[str, str]:
    """``{id: "duplicate_of=<kept id>[;near...]"}``; the first unit in input order (sources as listed, then
    rows) is the one kept."""
    if not spec.dedup:
        return {}
    ids = keys.ids  # bytes; decoded only for the duplicates found
    later, first = first_of_groups([keys.image, keys.content[:, 0], keys.content[:, 1]])
    found = {ids[a].decode(): f"duplicate_of={ids[b].decode()}" for a, b in zip(later, first)}
    if spec.near_dedup:
        rest = np.ones(len(ids), bool)
        rest[later] = False
        images = np.flatnonzero(rest & keys.image)
        near = near_image_duplicates(ids[images].astype(str).tolist(), keys.near[images, 1].tolist(), spec.near_dedup_bits)
        found.update({rid: f"duplicate_of={orig};near_bits={d}" for rid, (orig, d) in near.items()})
        texts = np.flatnonzero(rest & ~keys.image)
        later, first = first_of_groups([keys.near[texts, 0], keys.near[texts, 1]])
        found.update({ids[texts[a]].decode(): f"duplicate_of={ids[texts[b]].decode()};near_text" for a, b in zip(later, first)})
    return found


def dataset_version(keys: UnitKeys, duplicates: dict[str, str], spec: dict[str, Any]) -> str:
    """Content hash of the accepted units (ids and content hashes, sorted by id) and the settings; the
    split is a function of the id and the settings, so it is covered too."""
    accepted = ~np.isin(keys.ids, np.array(list(duplicates), dtype="S20")) if duplicates else np.ones(len(keys.ids), bool)
    order = np.argsort(keys.ids[accepted], kind="stable")
    fingerprint = hashlib.sha256(json.dumps({"schema": schema.SCHEMA_VERSION, "spec": spec}, sort_keys=True).encode())
    fingerprint.update(np.ascontiguousarray(keys.ids[accepted][order]).tobytes())
    fingerprint.update(np.ascontiguousarray(keys.content[accepted][order]).tobytes())
    return fingerprint.hexdigest()[:12]


def _curated_part(table: pa.Table, split: str) -> pa.Table:
    """The rows of ``split`` in the curated schema, with Hugging Face's feature metadata (``image`` decodes as a
    picture in ``datasets``)."""
    part = table.filter(pc.equal(table["split"], split)).select(schema.CURATED.names)
    return part.cast(schema.CURATED_FILES)


def _rejects_part(df: pd.DataFrame) -> pa.Table:
    part = df[df["split"] == "rejects"]
    return pa.Table.from_pandas(part[[f.name for f in schema.REJECTS]], schema=schema.REJECTS, preserve_index=False)


# ---- the job ------------------------------------------------------------------------------------

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
        return _run(sources, spec, store, staging, start)
    finally:
        if own_staging:
            discard(store, staging)


def _run(sources: list[Source], spec: PreprocessSpec, store: Store, staging: str, start: float) -> PreprocessResult:
    spec_dict = spec.model_dump()
    raw_files = store.files(staging, "raw", suffix=".parquet")
    n_inputs = sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in raw_files)
    if n_inputs == 0:
        raise ValueError("the sources hold no input units")
    cleaned = (ray.data.read_parquet(raw_files, filesystem=store.fs)
               .map_batches(clean_batch, fn_kwargs={"spec": spec_dict}, batch_format="pandas", batch_size=256)
               .materialize())

    keys = UnitKeys.collect(cleaned)
    duplicates = find_duplicates(keys, spec)  # id -> reject detail
    version = dataset_version(keys, duplicates, spec_dict)
    del keys
    tally = (cleaned.select_columns(["id", "source", "modality", "label", "status", "reason", "detail", "encoding"])
             .map_batches(tally_batch, fn_kwargs={"duplicates": duplicates, "spec": spec_dict}, batch_format="pandas")
             .to_pandas().groupby(TALLY_KEYS)["n"].sum())
    counts = _counts(tally, n_inputs, sources, spec)
    check_error_budget("preprocess.max_reject_share", counts["rejected"], n_inputs, counts["by_reason"],
                       spec.max_reject_share, "inputs")

    target = layout.curated(version)
    if layout.published(store, layout.CURATED, version):
        _point_latest(store, version)
        return PreprocessResult(version, store.display(target), store.read_json(layout.manifest(layout.CURATED, version))["counts"],
                                time.time() - start, reused=True)

    final = cleaned.map_batches(finalise_batch, fn_kwargs={"duplicates": duplicates, "spec": spec_dict},
                                batch_format="pyarrow").materialize()
    staging = staging_dir(store, layout.CURATED, version)
    rejects = staging_dir(store, "rejects/curated", version)
    try:
        for split in ("train", "val"):
            store.makedirs(staging, split)
            if counts[split]:
                (final.map_batches(_curated_part, fn_kwargs={"split": split}, batch_format="pyarrow")
                 .write_parquet(store.path(staging, split), filesystem=store.fs))
        if counts["rejected"]:
            (final.map_batches(_rejects_part, batch_format="pandas")
             .write_parquet(store.path(rejects), filesystem=store.fs))
        manifest = {
            "dataset_version": version,
            "schema_version": schema.SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "sources": [s.model_dump() for s in sources],
            "preprocess": spec_dict,
            "counts": counts,
            "labels": list(counts["by_label"]),
            "files": [p[len(store.path(staging)) + 1:] for p in store.files(staging, suffix=".parquet")]
                     + [f"rejects/{p[len(store.path(rejects)) + 1:]}" for p in store.files(rejects, suffix=".parquet")],
        }
        publish(store, rejects, "rejects/curated", version)
        publish(store, staging, layout.CURATED, version)
        store.write_json(manifest, layout.manifest(layout.CURATED, version))  # last: now the version is published
    except BaseException:
        discard(store, staging)
        discard(store, rejects)
        raise
    _point_latest(store, version)
    return PreprocessResult(version, store.display(target), counts, time.time() - start, reused=False)


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


def label_key(label: str) -> tuple:
    """Sort order of labels: numbers numerically first ("2" before "10"), then names."""
    return (0, int(label), "") if str(label).isdigit() else (1, 0, str(label))


def _point_latest(store: Store, version: str) -> None:
    store.write_json({"dataset_version": version}, layout.CURATED_LATEST)


def verify_curated(store: Store, version: str) -> dict[str, int]:
    """Counts the rows of the published files (Parquet footers only) and checks them against the manifest:
    train + augmented, val, rejects, and inputs = accepted + rejected. Raises ``AssertionError`` if not."""
    counts = store.read_json(layout.manifest(layout.CURATED, version))["counts"]
    folders = {"train": f"{layout.curated(version)}/train", "val": f"{layout.curated(version)}/val",
               "rejects": layout.curated_rejects(version)}
    found = {part: sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in store.files(folder, suffix=".parquet"))
             for part, folder in folders.items()}
    expected = {"train": counts["train"] + counts.get("augmented", 0), "val": counts["val"], "rejects": counts["rejected"]}
    if found != expected or counts["inputs"] != counts["accepted"] + counts["rejected"]:
        raise AssertionError(f"curated {version}: files hold {found}, manifest says {expected} "
                             f"(inputs {counts['inputs']}, accepted {counts['accepted']}, rejected {counts['rejected']})")
    return found


def resolve_dataset_version(store: Store, version: str | None = None) -> str:
    """``version`` if given (it must exist), else the latest published one."""
    if version is None:
        if not store.exists(layout.CURATED_LATEST):
            raise FileNotFoundError(f"no curated dataset under {store.display('curated')}; run `aigc preprocess` first")
        version = store.read_json(layout.CURATED_LATEST)["dataset_version"]
    if not layout.published(store, layout.CURATED, version):
        raise FileNotFoundError(f"curated dataset {version} not found under {store.display('curated')}")
    return version
