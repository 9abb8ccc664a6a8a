"""Preprocessing's per-batch work, run in Ray Data tasks: clean raw units, mark duplicates, assign splits, add
augmented copies of train images, count. Every function takes the validated ``PreprocessSpec`` itself."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.data import entries
from jobs.data.augment import augment, copy_id
from jobs.data.cleaning import BACKGROUNDS, Reject, normalise_image, normalise_text
from jobs.data.dedup import dhash, text_key
from jobs.data.spec import PreprocessSpec
from jobs.store import schema
from jobs.store.png import decode_png, encode_png


def row_id(source: str, input_ref: str) -> str:
    return hashlib.sha256(f"{source}|{input_ref}".encode()).hexdigest()[:20]


def split_of(row_id_: str, val_fraction: float, salt: str) -> str:
    """Deterministic from the id alone, so adding rows never moves existing rows between splits."""
    h = int(hashlib.sha256(f"{salt}|{row_id_}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def clean_batch(df: pd.DataFrame, opts: PreprocessSpec) -> pa.Table:
    """Raw units -> curated-schema rows plus ``status``/``reason``/``detail`` (rejected units keep their id)."""
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


def finalise_batch(table: pa.Table, duplicates: dict[str, str], opts: PreprocessSpec) -> pa.Table:
    """Marked rows plus the augmented copies of the train images."""
    df = mark_batch(table.to_pandas(), duplicates, opts)
    if opts.augment.copies:
        df = pd.concat([df, _augmented_rows(df[(df["split"] == "train") & (df["modality"] == "image")], opts)],
                       ignore_index=True)
    return pa.Table.from_pandas(df, schema=table.schema, preserve_index=False)


TALLY_KEYS = ["source", "split", "reason", "label", "modality", "encoding", "term"]


def tally_batch(df: pd.DataFrame, duplicates: dict[str, str], opts: PreprocessSpec) -> pd.DataFrame:
    """Row counts of one batch per (source, split, reason, label, modality, encoding, blocked term): the
    driver adds these up, so counting needs no per-unit state there."""
    df = mark_batch(df, duplicates, opts)
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



def curated_part(table: pa.Table, split: str) -> pa.Table:
    """The rows of ``split`` in the curated schema, with Hugging Face's feature metadata (``image`` decodes as a
    picture in ``datasets``)."""
    part = table.filter(pc.equal(table["split"], split)).select(schema.CURATED.names)
    return part.cast(schema.CURATED_FILES)


def rejects_part(df: pd.DataFrame) -> pa.Table:
    part = df[df["split"] == "rejects"]
    return pa.Table.from_pandas(part[[f.name for f in schema.REJECTS]], schema=schema.REJECTS, preserve_index=False)
