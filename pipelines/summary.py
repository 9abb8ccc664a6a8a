"""The short report every command ends with: what was read, made, and where to look."""

from __future__ import annotations

from typing import Any

from jobs.data.curate import PreprocessResult
from jobs.generate.manifest import GenerateResult
from jobs.mix.mixture import MixResult
from jobs.train.run import TrainResult

from .night import ModelTonight, NightResult
from .report_page import cost_note, credentials_note

Lines = list[tuple[str, str]]


def _table(rows: Lines) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def render(title: str, lines: Lines, seconds: float | None = None) -> str:
    if seconds is not None:
        lines = [*lines, ("total time", f"{seconds:.1f}s")]
    bar = "=" * 72
    return f"\n{bar}\n{title}\n{bar}\n{_table(lines)}\n"


def preprocess_lines(r: PreprocessResult) -> Lines:
    c = r.counts
    reasons = ", ".join(f"{k} {v}" for k, v in c["by_reason"].items()) or "none"
    sources = ", ".join(f"{k} {v['inputs']:,}" for k, v in c["by_source"].items())
    return [
        ("curated", f"{r.dataset_version}{' (unchanged, reused)' if r.reused else ''}  {r.path}"),
        ("rows read", f"{c['inputs']:,}  ({sources})"),
        ("accepted", f"{c['accepted']:,}  (train {c['train']:,}, val {c['val']:,})"
                     + (f" + {c['augmented']:,} augmented train rows" if c.get("augmented") else "")),
        ("rejected", f"{c['rejected']:,}  ({reasons})"),
        ("preprocess time", f"{r.seconds:.1f}s"),
    ]


def _trained(t: TrainResult) -> str:
    if t.used_as_is:
        return f"pretrained weights used as they are (finetune: false), {t.seconds:.1f}s"
    return f"{t.steps:,} steps, {t.epochs} epochs, {t.seconds:.1f}s, {t.samples_per_second:.0f} samples/s"


def train_lines(results: list[TrainResult], display: Any = str) -> Lines:
    """``display``: how a version folder's store path is shown (``Store.display``)."""
    return [(f"model {r.model.name}", f"{r.model.version}: {_trained(r)}"
             f"{' (production)' if r.promoted else ' (not promoted: `aigc promote` decides)'}  {display(r.model.path)}")
            for r in results]


def generate_lines(r: GenerateResult) -> Lines:
    by = ", ".join(f"{k} {v:,}" for k, v in r.by_modality.items())
    m = r.manifest or {}
    reasons = ", ".join(f"{k} {v:,}" for k, v in (m.get("rejected_by_reason") or {}).items())
    lines = [
        ("generated", f"{r.rows:,} rows ({by}), {r.rejected:,} rejected" + (f" ({reasons})" if reasons else "")
                      + f", night {r.run_date}"),
        ("generation", f"{r.seconds:.1f}s, {r.rows_per_second:.1f} rows/s"),
    ]
    top_up = m.get("top_up") or {}
    if top_up.get("rounds"):
        lines.append(("top-up", f"{top_up['extra_rows']:,} replacement rows in {top_up['rounds']} round(s)"))
    if m.get("short_of_request"):
        short = ", ".join(f"{k} {v:,}" for k, v in list(m["short_of_request"].items())[:5])
        lines.append(("short of count", f"{short} (raise generate.filters.top_up_rounds or loosen the filters)"))
    if m.get("resumed"):
        lines.append(("resumed", f"{m['resumed']['rows_found']:,} rows were already written by the interrupted run"))
    if credentials_note(m.get("credentials")):
        lines.append(("credentials", credentials_note(m.get("credentials"))))
    lines.append(("published", r.path))
    return lines


def _model_line(m: ModelTonight) -> str:
    if not m.trained:
        return f"reused production {m.version} ({m.decision})"
    failures = m.promotion.failures if m.promotion else []
    verdict = "promoted to production" if m.promoted else f"NOT promoted ({'; '.join(failures)}); production stays {m.version}"
    if m.trained.used_as_is:
        return f"registered {m.candidate} ({m.decision}): {_trained(m.trained)}; {verdict}"
    t = m.trained
    return f"trained {m.candidate} ({m.decision}): {t.steps:,} steps, {t.seconds:.1f}s, {t.samples_per_second:.0f} samples/s; {verdict}"


def night_lines(night: NightResult, output: str) -> Lines:
    """A night: its outcome, preprocessing, each model, generation and the gate's figures, where to look."""
    lines = [("run date", f"{night.run_date}: {night.status}")]
    if night.preprocess:
        lines += preprocess_lines(night.preprocess)
    lines += [(f"model {m.name}", _model_line(m)) for m in night.models]
    if night.generate:
        lines += generate_lines(night.generate)
    gate = night.gate
    if gate:
        lines += [(f"tonight {model}", ", ".join(f"{k} {v:.3g}" for k, v in figures.items()) or "no figures")
                  for model, figures in gate["figures"].items()]
        lines.append(("quality gate", "passed" if gate["passed"] else "REFUSED: " + "; ".join(gate["failures"])))
    if cost_note(night.cost):
        lines.append(("cost", cost_note(night.cost)))
    lines.append(("report", night.report or "not written"))
    lines.append(("look at", f"aigc inspect {output}/generated/date={night.run_date}"))
    return lines


def augment_lines(r: MixResult) -> Lines:
    c, sources = r.counts, r.manifest["sources"]
    dates = ", ".join(g["run_date"] for g in sources["generated"])
    left = c["inputs"]["real"]["not_selected"], c["inputs"]["synthetic"]["not_selected"]
    return [
        ("augmented", f"{r.mix_version}{' (unchanged, reused)' if r.reused else ''}  {r.path}"),
        ("rows", f"{c['rows']:,}: real {c['real']:,}, synthetic {c['synthetic']:,} ({c['synthetic_share']:.1%} synthetic)"),
        ("per label", ", ".join(f"{l} {v['real']:,}+{v['synthetic']:,}" for l, v in c["by_label"].items()) + "  (real+synthetic)"),
        ("not selected", f"real {left[0]:,}, synthetic {left[1]:,} (counted in its manifest)"),
        ("from", f"curated {sources['curated']['dataset_version']} ({'+'.join(sources['curated']['splits'])}), "
                 f"generated {dates}"),
    ]
