"""Reading a published curated version: the one reader every stage uses (training, quality references, the gate,
mixtures, ``aigc inspect``).

A version is ``ROOT/curated/<version>/{train,val}/*.parquet`` plus its manifest (``jobs.store.layout``); the
manifest is written last, so a version without it is not published. ``manifests/curated/latest.json`` names the
newest one.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from jobs.store import layout
from jobs.store.png import decode_png
from jobs.store.storage import Store

MAX_ROWS = 50_000  # rows a reader of a whole split takes at most (an even stride through it)


def label_key(label: str) -> tuple:
    """Sort order of labels: numbers numerically first ("2" before "10"), then names."""
    return (0, int(label), "") if str(label).isdigit() else (1, 0, str(label))


def resolve_dataset_version(store: Store, version: str | None = None) -> str:
    """``version`` if given (it must exist), else the latest published one."""
    if version is None:
        if not store.exists(layout.CURATED_LATEST):
            raise FileNotFoundError(f"no curated dataset under {store.display('curated')}; run `aigc preprocess` first")
        version = store.read_json(layout.CURATED_LATEST)["dataset_version"]
    if not layout.published(store, layout.CURATED, version):
        raise FileNotFoundError(f"curated dataset {version} not found under {store.display('curated')}")
    return version


def point_latest(store: Store, version: str) -> None:
    store.write_json({"dataset_version": version}, layout.CURATED_LATEST)


def manifest(store: Store, version: str) -> dict[str, Any]:
    return store.read_json(layout.manifest(layout.CURATED, version))


def verify_curated(store: Store, version: str) -> dict[str, int]:
    """Counts the rows of the published files (Parquet footers only) and checks them against the manifest:
    train + augmented, val, rejects, and inputs = accepted + rejected. Raises ``AssertionError`` if not."""
    counts = manifest(store, version)["counts"]
    folders = {"train": f"{layout.curated(version)}/train", "val": f"{layout.curated(version)}/val",
               "rejects": layout.rejects(layout.CURATED, version)}
    found = {part: sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in store.files(folder, suffix=".parquet"))
             for part, folder in folders.items()}
    expected = {"train": counts["train"] + counts.get("augmented", 0), "val": counts["val"], "rejects": counts["rejected"]}
    if found != expected or counts["inputs"] != counts["accepted"] + counts["rejected"]:
        raise AssertionError(f"curated {version}: files hold {found}, manifest says {expected} "
                             f"(inputs {counts['inputs']}, accepted {counts['accepted']}, rejected {counts['rejected']})")
    return found


def rows_filter(modality: str, sources: list[str] | None = None) -> pc.Expression:
    """The rows of one modality (and, when given, of these source ids)."""
    wanted = pc.field("modality") == modality
    return wanted & pc.field("source").isin(sources) if sources else wanted


def split_dataset(store: Store, version: str, split: str) -> pads.Dataset | None:
    """The split's files as a pyarrow dataset, or None when the version has no such split."""
    folder = f"{layout.curated(version)}/{split}"
    if not store.exists(folder):
        return None
    return pads.dataset(store.path(folder), filesystem=store.fs, format="parquet")


def curated_rows(store: Store, version: str, split: str, modality: str, sources: list[str] | None,
                 columns: list[str], max_rows: int | None = MAX_ROWS) -> pa.Table | None:
    """``columns`` of the split's rows of ``modality`` (and ``sources``), at most ``max_rows`` at an even stride;
    None when the split does not exist."""
    dataset = split_dataset(store, version, split)
    if dataset is None:
        return None
    table = dataset.to_table(columns=columns, filter=rows_filter(modality, sources))
    stride = max(1, math.ceil(table.num_rows / max_rows)) if max_rows else 1
    return table.take(np.arange(0, table.num_rows, stride)) if stride > 1 else table


def curated_texts(store: Store, version: str, split: str, sources: list[str] | None) -> Iterator[str]:
    """The split's non-empty texts, streamed batch by batch (flat memory, for training a tokenizer)."""
    dataset = split_dataset(store, version, split)
    for batch in dataset.to_batches(columns=["text"], filter=rows_filter("text", sources)) if dataset else []:
        yield from (t for t in batch.column("text").to_pylist() if t)


def decode_images(table: pa.Table) -> np.ndarray:
    """The ``image`` column's PNGs as ``uint8 [N, H, W, C]``."""
    return np.stack([decode_png(img["bytes"]) for img in table.column("image").to_pylist()])
