"""``aigc inspect PATH``: a human summary of a curated dataset, a generated partition, or a model version.

PATH is a local folder or an object-store URI (``s3://bucket/runs/generated/date=D?endpoint_override=...``),
read through ``jobs.store.Store`` like everything else the pipeline touches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads

from jobs.store import layout, registry
from jobs.store.storage import Store

from .report_page import credentials_note


def curated_grid(dataset: Store, out: Path, per_label: int = 8) -> Path | None:
    """A PNG with one row per label of accepted train images (at most ``per_label`` each)."""
    import io

    import numpy as np
    from PIL import Image

    from jobs.store.pictures import grid

    table = pads.dataset(dataset.path("train"), filesystem=dataset.fs, format="parquet").to_table(
        columns=["modality", "label", "image"])
    df = table.to_pandas()
    df = df[df["modality"] == "image"]
    if df.empty:
        return None
    images = []
    for _, group in sorted(df.groupby(df["label"].fillna("(none)")), key=lambda kv: kv[0]):
        row = [np.asarray(Image.open(io.BytesIO(i["bytes"])).convert("RGB")) for i in group["image"].head(per_label)]
        row += [np.full_like(row[0], 255)] * (per_label - len(row))
        images += row
    grid(images, ncol=per_label).save(out)
    return out


def describe_path(path: str, grid_path: str | None = None) -> str:
    p = Store(path)
    if not p.exists():
        raise FileNotFoundError(f"{p.display()} does not exist")
    if p.exists(registry.CARD):
        card = registry.read_card(p, "")
        lines = [f"model {card.name} {card.version} ({card.family}, {card.modality}, {card.parameters:,} parameters)",
                 f"  dataset {card.dataset_version}, {card.steps:,} steps / {card.epochs} epochs in {card.wall_seconds}s",
                 "  final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in card.final_metrics.items()),
                 f"  sha256 {card.checkpoint_sha256}",
                 f"  files: {', '.join(p.listdir())}"]
        return "\n".join(lines)
    found = _manifest_of(p)
    manifest = found.read_json(f"{p.name}.json") if found else {}
    if "mix_version" in manifest:
        return _augmented(manifest)
    if "dataset_version" in manifest:
        m = manifest
        c = m["counts"]
        return "\n".join([f"curated dataset {m['dataset_version']} (schema {m['schema_version']}, {m['created_at']})",
                          f"  inputs {c['inputs']:,} = accepted {c['accepted']:,} (train {c['train']:,}, val {c['val']:,})"
                          f" + rejected {c['rejected']:,}",
                          f"  by source: {json.dumps(c['by_source'])}",
                          f"  rejects by reason: {json.dumps(c['by_reason'])}",
                          f"  by label: {json.dumps(c['by_label'])}"]
                         + ([f"  augmented train rows: {c['augmented']:,}"] if c.get("augmented") else [])
                         + _grid_line(p, Path(grid_path or f"curated-{m['dataset_version']}-samples.png")))
    files = layout.data_files(p)
    if not files:
        raise ValueError(f"{p.display()} holds no model card, curated manifest or Parquet files")
    table = pads.dataset(files, filesystem=p.fs, format="parquet").to_table()
    cols = set(table.column_names)
    lines = [f"{len(files)} Parquet files, {table.num_rows:,} rows, {len(cols)} columns"]
    for col in ("modality", "model_name", "label", "split", "reason"):
        if col in cols:
            counts = Counter(v for v in table.column(col).to_pylist() if v is not None)
            lines.append(f"  {col}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    if "seed" in cols:
        lines.append(f"  ids unique: {len(set(table.column('id').to_pylist())) == table.num_rows}")
    night = _night_manifest(p)
    if night is not None and credentials_note(night.get("credentials")):
        lines.append(f"  credentials: {credentials_note(night.get('credentials'))}")
    return "\n".join(lines)


def _night_manifest(partition: Store) -> dict | None:
    """The manifest of a published night ``ROOT/generated/date=D`` (``ROOT/manifests/generated/D.json``)."""
    run_date = partition.name.partition("date=")[2]
    manifests = partition.parent().parent().child("manifests", layout.GENERATED)
    if not run_date or partition.parent().name != layout.GENERATED or not manifests.exists(f"{run_date}.json"):
        return None
    return manifests.read_json(f"{run_date}.json")


def _manifest_of(dataset: Store) -> Store | None:
    """The folder holding a curated version's or a mix's manifest, ``ROOT/manifests/<area>/<name>.json``
    (``jobs.store.layout``), when ``dataset`` is ``ROOT/<area>/<name>``."""
    area = dataset.parent()
    if area.name not in ("curated", "augmented"):
        return None
    manifests = area.parent().child("manifests", area.name)
    return manifests if manifests.exists(f"{dataset.name}.json") else None


def _grid_line(dataset: Store, out: Path) -> list[str]:
    written = curated_grid(dataset, out)
    return [f"  sample grid (one row per label): {written}"] if written else []


def _augmented(m: dict) -> str:
    c, src = m["counts"], m["sources"]
    return "\n".join([
        f"augmented dataset {m['mix_version']} ({m['modality']}, {m['created_at']})",
        f"  rows {c['rows']:,} = real {c['real']:,} + synthetic {c['synthetic']:,} ({c['synthetic_share']:.1%} synthetic)",
        f"  from curated {src['curated']['dataset_version']} ({'+'.join(src['curated']['splits'])}), generated "
        + ", ".join(g["run_date"] for g in src["generated"]),
        "  by label (real+synthetic): " + ", ".join(f"{l} {v['real']:,}+{v['synthetic']:,}" for l, v in c["by_label"].items()),
        f"  not selected: real {c['inputs']['real']['not_selected']:,}, synthetic {c['inputs']['synthetic']['not_selected']:,}",
    ])
