"""Reproduce published rows from what they record: model version, seed, condition and sampler settings.

The reproducibility rule makes a row a function of (checkpoint, seed, condition, sampler settings, device
type), so any published row can be rebuilt and checked: the pixels or text must hash to the row's
``content_sha256``, and an image re-encoded with the row's provenance must give the very PNG bytes that were
published (outside a signed image's C2PA chunk, whose signature differs at every signing). Sampling goes through the same ``SamplingActor`` the nightly job uses, in this process (no Ray).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from jobs.generate.actors import SamplingActor
from jobs.store import layout, registry
from jobs.store.png import decode_png, encode_png, has_c2pa, without_c2pa
from jobs.store.registry import ModelCard
from jobs.store.storage import Store

COLUMNS = ["id", "run_id", "run_date", "modality", "image", "text", "label", "prompt", "request_id", "model_name",
           "model_family", "model_version", "checkpoint_sha256", "dataset_version", "seed", "sampler",
           "content_sha256", "provenance"]


@dataclasses.dataclass
class Regenerated:
    id: str
    run_date: str
    model: str
    identical: bool  # pixels/text hash to the row's content_sha256 (and the PNG bytes match, for images)
    detail: str
    path: str | None  # the rebuilt file, when an output folder was given


def find_rows(store: Store, ids: list[str]) -> Any:
    """The published rows with these ids, from every night's partition (``ROOT/generated`` holds nothing else)."""
    return published(store, pc.field("id").isin(ids)).to_pandas()


def published(store: Store, where: pc.Expression) -> pa.Table:
    """The published rows (``COLUMNS``) that ``where`` selects, from every night's partition."""
    if not store.exists("generated"):
        raise FileNotFoundError(f"nothing generated under {store.display('generated')}")
    dataset = pads.dataset(store.path("generated"), filesystem=store.fs, format="parquet")
    return dataset.to_table(columns=COLUMNS, filter=where)


def find_refused(store: Store, ids: list[str]) -> dict[str, str]:
    """Why each of ``ids`` that generation refused was never published: ``{id: "DATE reason: detail"}``."""
    folder = f"rejects/{layout.GENERATED}"
    if not ids or not store.exists(folder):
        return {}
    dataset = pads.dataset(store.path(folder), filesystem=store.fs, format="parquet")
    table = dataset.to_table(columns=["id", "run_date", "stage", "reason", "detail"], filter=pc.field("id").isin(ids))
    return {r["id"]: f"{r['run_date']} refused at {r['stage']}: {r['reason']} ({r['detail']})" for r in table.to_pylist()}


def regenerate(store: Store, ids: list[str], out_dir: str | None = None,
               use_gpu: bool = False) -> tuple[list[Regenerated], list[str], dict[str, str]]:
    """Rebuilds the published rows ``ids``: one result per row found, the ids found nowhere, and why each
    id that generation refused (a filter or a failed sample) was not published."""
    rows = find_rows(store, ids)
    refused = find_refused(store, sorted(set(ids) - set(rows["id"])))
    missing = sorted(set(ids) - set(rows["id"]) - set(refused))
    results: list[Regenerated] = []
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    for (name, version), group in rows.groupby(["model_name", "model_version"], sort=True):
        ref = registry.resolve(store, name, version)
        group = group.reset_index(drop=True)
        out = SamplingActor(store.root, {name: version}, use_gpu)(group)
        for row, raw, text, error in zip(group.itertuples(index=False), out["raw"], out["text"], out["error"]):
            results.append(_check(row, raw, text, error, ref.card, out_dir))
    order = {i: k for k, i in enumerate(ids)}
    return sorted(results, key=lambda r: order.get(r.id, 0)), missing, refused


def _check(row: Any, raw: bytes | None, text: str | None, error: str | None, card: ModelCard,
           out_dir: str | None) -> Regenerated:
    run_date = str(row.run_date)
    model = f"{row.model_name}@{row.model_version}"
    if error:
        return Regenerated(row.id, run_date, model, False, f"sampling failed: {error}", None)
    if card.checkpoint_sha256 != row.checkpoint_sha256:
        return Regenerated(row.id, run_date, model, False, "the registry's weights differ from the row's checkpoint", None)
    path = None
    if row.modality == "image":
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(card.image_shape)
        content = hashlib.sha256(arr.tobytes()).hexdigest()
        png = encode_png(arr, json.loads(row.provenance))
        published = None if row.image is None else row.image["bytes"]
        signed = published is not None and has_c2pa(published)
        same_png = published is not None and png == (without_c2pa(published) if signed else published)
        identical = content == row.content_sha256 and same_png
        detail = ("pixels and PNG bytes identical" + (" outside the signed C2PA manifest (its signature differs "
                                                      "at every signing; `aigc verify` checks it)" if signed else "")
                  if identical else (
            "pixels identical, PNG bytes differ (the embedded label or the encoder)" if content == row.content_sha256
            else _pixel_difference(row, arr)))
        if out_dir:
            path = os.path.join(out_dir, f"{row.id}.png")
            with open(path, "wb") as f:
                f.write(png)
    else:
        identical = hashlib.sha256(text.encode()).hexdigest() == row.content_sha256 and text == row.text
        detail = "text identical" if identical else _text_difference(row.text or "", text)
        if out_dir:
            path = os.path.join(out_dir, f"{row.id}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    return Regenerated(row.id, run_date, model, identical, detail, path)


def _pixel_difference(row: Any, rebuilt: np.ndarray) -> str:
    """How far the rebuilt pixels are from the published PNG's (or from its recorded hash alone)."""
    if row.image is None:
        return "pixels differ (the row holds no image to compare)"
    published = decode_png(row.image["bytes"])
    if published.shape != rebuilt.shape:
        return f"pixels differ: published {published.shape}, rebuilt {rebuilt.shape}"
    diff = np.abs(published.astype(np.int16) - rebuilt.astype(np.int16)).max(axis=-1)
    if not diff.any():
        return "the published PNG's pixels are rebuilt, but they do not hash to the row's content_sha256"
    return f"pixels differ: {int((diff > 0).sum())} of {diff.size} pixels, by up to {int(diff.max())} of 255"


def _text_difference(published: str, rebuilt: str) -> str:
    """Where the rebuilt text leaves the published one, with a few characters of each from there."""
    at = len(os.path.commonprefix([published, rebuilt]))
    if at == len(published) == len(rebuilt):
        return "the published text is rebuilt, but it does not hash to the row's content_sha256"
    return f"text differs from character {at}: published {published[at:at + 24]!r}, rebuilt {rebuilt[at:at + 24]!r}"
