"""``aigc inspect PATH``: a human summary of a curated dataset, a generated partition, or a model version."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads


def describe_path(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if (p / "model_card.json").is_file():
        card = json.loads((p / "model_card.json").read_text())
        lines = [f"model {card['name']} {card['version']} ({card['family']}, {card['modality']}, {card['parameters']:,} parameters)",
                 f"  dataset {card['dataset_version']}, {card['steps']:,} steps / {card['epochs']} epochs in {card['wall_seconds']}s",
                 "  final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in card["final_metrics"].items()),
                 f"  sha256 {card['checkpoint_sha256']}",
                 f"  files: {', '.join(sorted(f.name for f in p.iterdir()))}"]
        return "\n".join(lines)
    if (p / "_manifest.json").is_file():
        m = json.loads((p / "_manifest.json").read_text())
        c = m["counts"]
        return "\n".join([f"curated dataset {m['dataset_version']} (schema {m['schema_version']}, {m['created_at']})",
                          f"  inputs {c['inputs']:,} = accepted {c['accepted']:,} (train {c['train']:,}, val {c['val']:,})"
                          f" + rejected {c['rejected']:,}",
                          f"  by source: {json.dumps(c['by_source'])}",
                          f"  rejects by reason: {json.dumps(c['by_reason'])}",
                          f"  by label: {json.dumps(c['by_label'])}"])
    files = sorted(str(f) for f in p.rglob("*.parquet") if not any(part.startswith("_") for part in f.relative_to(p).parts))
    if not files:
        raise ValueError(f"{path} holds no model card, curated manifest or Parquet files")
    table = pads.dataset(files, format="parquet").to_table()
    cols = set(table.column_names)
    lines = [f"{len(files)} Parquet files, {table.num_rows:,} rows, {len(cols)} columns"]
    for col in ("modality", "model_name", "label", "split", "reason"):
        if col in cols:
            counts = Counter(v for v in table.column(col).to_pylist() if v is not None)
            lines.append(f"  {col}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    if "seed" in cols:
        lines.append(f"  ids unique: {len(set(table.column('id').to_pylist())) == table.num_rows}")
    return "\n".join(lines)
