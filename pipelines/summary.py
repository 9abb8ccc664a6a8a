"""The short report every command ends with: what was read, made, and where to look."""

from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def preprocess_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    c = r["counts"]
    reasons = ", ".join(f"{k} {v}" for k, v in c["by_reason"].items()) or "none"
    sources = ", ".join(f"{k} {v['inputs']:,}" for k, v in c["by_source"].items())
    return [
        ("curated", f"{r['dataset_version']}{' (unchanged, reused)' if r['reused'] else ''}  {r['path']}"),
        ("rows read", f"{c['inputs']:,}  ({sources})"),
        ("accepted", f"{c['accepted']:,}  (train {c['train']:,}, val {c['val']:,})"
                     + (f" + {c['augmented']:,} augmented train rows" if c.get("augmented") else "")),
        ("rejected", f"{c['rejected']:,}  ({reasons})"),
        ("preprocess time", f"{r['seconds']:.1f}s"),
    ]


def train_lines(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for r in results:
        m = r["model"]
        out.append((f"model {m['name']}", f"{m['version']}: {r['steps']:,} steps, {r['epochs']} epochs, "
                    f"{r['seconds']:.1f}s, {r['samples_per_second']:.0f} samples/s"
                    f"{' (production)' if r.get('promoted') else ' (not promoted: `aigc promote` decides)'}  {m['path']}"))
    return out


def generate_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    by = ", ".join(f"{k} {v:,}" for k, v in r["by_modality"].items())
    return [
        ("generated", f"{r['rows']:,} rows ({by}), {r['rejected']:,} rejected, run_date={r['run_date']}"),
        ("generation", f"{r['seconds']:.1f}s, {r['rows_per_second']:.1f} rows/s"),
        ("published", r["path"]),
    ]


def render(title: str, lines: list[tuple[str, str]], seconds: float | None = None) -> str:
    if seconds is not None:
        lines = [*lines, ("total time", f"{seconds:.1f}s")]
    bar = "=" * 72
    return f"\n{bar}\n{title}\n{bar}\n{_table(lines)}\n"
