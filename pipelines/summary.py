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
        done = (f"pretrained weights used as they are (finetune: false), {r['seconds']:.1f}s" if r.get("used_as_is")
                else f"{r['steps']:,} steps, {r['epochs']} epochs, {r['seconds']:.1f}s, {r['samples_per_second']:.0f} samples/s")
        out.append((f"model {m['name']}", f"{m['version']}: {done}"
                    f"{' (production)' if r.get('promoted') else ' (not promoted: `aigc promote` decides)'}  {m['path']}"))
    return out


def generate_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    by = ", ".join(f"{k} {v:,}" for k, v in r["by_modality"].items())
    m = r.get("manifest") or {}
    reasons = ", ".join(f"{k} {v:,}" for k, v in (m.get("rejected_by_reason") or {}).items())
    lines = [
        ("generated", f"{r['rows']:,} rows ({by}), {r['rejected']:,} rejected"
                      + (f" ({reasons})" if reasons else "") + f", night {r['run_date']}"),
        ("generation", f"{r['seconds']:.1f}s, {r['rows_per_second']:.1f} rows/s"),
    ]
    top_up = m.get("top_up") or {}
    if top_up.get("rounds"):
        lines.append(("top-up", f"{top_up['extra_rows']:,} replacement rows in {top_up['rounds']} round(s)"))
    if m.get("short_of_request"):
        short = ", ".join(f"{k} {v:,}" for k, v in list(m["short_of_request"].items())[:5])
        lines.append(("short of count", f"{short} (raise generate.filters.top_up_rounds or loosen the filters)"))
    if m.get("resumed"):
        lines.append(("resumed", f"{m['resumed']['rows_found']:,} rows were already written by the interrupted run"))
    lines.append(("published", r["path"]))
    return lines


def models_lines(models: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """What the nightly flow did with each model: reused production, or trained a candidate and gated it."""
    out = []
    for m in models:
        if not m["trained"]:
            out.append((f"model {m['name']}", f"reused production {m['version']} ({m['decision']})"))
            continue
        t = m["train"]
        verdict = "promoted to production" if m["promoted"] else \
            f"NOT promoted ({'; '.join(m['promotion_failures'])}); production stays {m['version']}"
        if t.get("used_as_is"):
            out.append((f"model {m['name']}", f"registered {m['candidate']} ({m['decision']}): pretrained weights used "
                        f"as they are (finetune: false), {t['seconds']:.1f}s; {verdict}"))
            continue
        out.append((f"model {m['name']}", f"trained {m['candidate']} ({m['decision']}): {t['steps']:,} steps, "
                    f"{t['seconds']:.1f}s, {t['samples_per_second']:.0f} samples/s; {verdict}"))
    return out


def gate_lines(night: dict[str, Any]) -> list[tuple[str, str]]:
    gate = night.get("gate")
    if not gate:
        return []
    lines = []
    for model, figures in gate["figures"].items():
        lines.append((f"tonight {model}", ", ".join(f"{k} {v:.3g}" for k, v in figures.items()) or "no figures"))
    lines.append(("quality gate", "passed" if gate["passed"] else "REFUSED: " + "; ".join(gate["failures"])))
    return lines


def render(title: str, lines: list[tuple[str, str]], seconds: float | None = None) -> str:
    if seconds is not None:
        lines = [*lines, ("total time", f"{seconds:.1f}s")]
    bar = "=" * 72
    return f"\n{bar}\n{title}\n{bar}\n{_table(lines)}\n"


def augment_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    c, sources = r["counts"], r["manifest"]["sources"]
    dates = ", ".join(g["run_date"] for g in sources["generated"])
    left = c["inputs"]["real"]["not_selected"], c["inputs"]["synthetic"]["not_selected"]
    return [
        ("augmented", f"{r['mix_version']}{' (unchanged, reused)' if r['reused'] else ''}  {r['path']}"),
        ("rows", f"{c['rows']:,}: real {c['real']:,}, synthetic {c['synthetic']:,} ({c['synthetic_share']:.1%} synthetic)"),
        ("per label", ", ".join(f"{l} {v['real']:,}+{v['synthetic']:,}" for l, v in c["by_label"].items()) + "  (real+synthetic)"),
        ("not selected", f"real {left[0]:,}, synthetic {left[1]:,} (counted in its manifest)"),
        ("from", f"curated {sources['curated']['dataset_version']} ({'+'.join(sources['curated']['splits'])}), "
                 f"generated {dates}"),
    ]
