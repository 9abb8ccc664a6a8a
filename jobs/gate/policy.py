"""The gate's decisions: is a candidate model promoted, is tonight's output published.

Both compare figures (``jobs.gate.figures``) with the config's bounds (``GateSpec``): ``absolute`` bounds, and
``relative`` ones against a baseline (a fraction of it, at least the figure's ``noise``). A candidate's baseline is the production version's evaluation on the same
seeds; tonight's output's baseline is the last published night's figures of the same model (``output_baseline``).
A figure that is not finite fails its checks; a figure a model does not have (text metrics of an image model)
has none. The flows only carry the results: every rule lives here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jobs.gate.spec import GATE_METRICS, GateSpec
from jobs.store import layout
from jobs.store.storage import Store


def check(model: str, figures: dict[str, float], baseline: dict[str, float] | None, spec: GateSpec) -> list[dict[str, Any]]:
    """One entry per bound that applies: ``{model, metric, value, bound, kind, passed}``."""
    checks = []

    def add(metric: str, bound: float, kind: str) -> None:
        value = figures[metric]
        lower = GATE_METRICS[metric] == "lower"
        ok = math.isfinite(value) and (value <= bound if lower else value >= bound)
        checks.append({"model": model, "metric": metric, "value": value, "bound": bound, "kind": kind, "passed": bool(ok)})

    for metric, bound in spec.absolute.items():
        if metric in figures:
            add(metric, bound, "absolute")
    for metric, tol in spec.relative.items():
        base = (baseline or {}).get(metric)
        if metric in figures and base is not None and math.isfinite(base):
            slack = max(tol * abs(base), spec.noise.get(metric, 0.0))  # a ratio of a figure near zero is noise
            add(metric, base + slack if GATE_METRICS[metric] == "lower" else base - slack, "relative")
    return checks


def failures(checks: list[dict[str, Any]]) -> list[str]:
    """Failed checks as sentences: ``digits-gan: fd 12.4 > 9.1 (relative bound)``."""
    out = []
    for c in checks:
        if not c["passed"]:
            op = ">" if GATE_METRICS[c["metric"]] == "lower" else "<"
            out.append(f"{c['model']}: {c['metric']} {c['value']:.4g} {op} {c['bound']:.4g} ({c['kind']} bound)")
    return out


# ---- a candidate model -------------------------------------------------------------------------------------------

def non_finite(final_metrics: dict[str, float]) -> list[str]:
    return sorted(k for k, v in final_metrics.items() if not math.isfinite(v))


def needs_evaluation(spec: GateSpec, final_metrics: dict[str, float]) -> bool:
    """Whether a candidate is evaluated at all: with the gate on and training metrics that are all finite (a
    diverged model is refused without sampling it)."""
    return spec.enabled and not non_finite(final_metrics)


@dataclasses.dataclass
class Promotion:
    """The verdict on a candidate: promoted only if nothing failed."""

    model: str
    version: str
    evaluation: dict[str, float] | None  # the candidate's figures (None: not evaluated)
    baseline: dict[str, Any] | None  # {version, figures} of production, when it is another version
    checks: list[dict[str, Any]]
    failures: list[str]

    @property
    def promoted(self) -> bool:
        return not self.failures


PER_TOKEN = ("perplexity",)  # figures in a text model's own tokens


def candidate_baseline(candidate: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
    """Production's evaluation as the candidate's baseline, less the figures the two cannot share: per-token
    figures when the tokenizers differ (a config that moves from bytes to BPE would else be refused on a
    perplexity that only counts larger tokens). ``not_compared`` names what was left out and why."""
    figures, dropped = dict(production["figures"]), []
    if candidate.get("tokens") != production.get("tokens"):
        dropped = [f"{k} (tokenizer {production.get('tokens')} -> {candidate.get('tokens')})"
                   for k in PER_TOKEN if figures.pop(k, None) is not None]
    return {"version": production["version"], "figures": figures, **({"not_compared": dropped} if dropped else {})}


def judge_candidate(model: str, version: str, final_metrics: dict[str, float], evaluation: dict[str, float] | None,
                    baseline: dict[str, Any] | None, spec: GateSpec) -> Promotion:
    """Non-finite final training metrics refuse a candidate outright; otherwise its evaluation (when the gate
    evaluated it) must pass the absolute bounds and the relative ones against ``baseline`` (production's)."""
    bad = non_finite(final_metrics)
    if bad:
        return Promotion(model, version, None, None, [], [f"{model}: non-finite final training metrics {', '.join(bad)}"])
    checks = check(model, evaluation, (baseline or {}).get("figures"), spec) if evaluation is not None else []
    return Promotion(model, version, evaluation, baseline, checks, failures(checks))


# ---- tonight's output --------------------------------------------------------------------------------------------

def output_baseline(store: Store, model_name: str, run_date: str) -> dict[str, Any] | None:
    """``{run_date, figures}`` of ``model_name``'s output in the latest published night before ``run_date``."""
    for night in reversed(layout.night_manifests(store)):
        if night < run_date:
            figures = ((store.read_json(layout.manifest(layout.GENERATED, night)).get("gate") or {}).get("figures") or {}).get(model_name)
            if figures:
                return {"run_date": night, "figures": figures}
    return None


@dataclasses.dataclass
class GateVerdict:
    """Tonight's output judged per model; ``passed`` only if every model has rows and no check failed. Kept in
    the night's manifest (``gate``), where the next night finds its baselines."""

    figures: dict[str, dict[str, float]]
    rows: dict[str, int]
    baseline: dict[str, dict[str, Any]]
    checks: list[dict[str, Any]]
    augmentation_lift: dict[str, dict[str, Any]]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def judge_night(results: dict[str, dict[str, Any]], store: Store, run_date: str, spec: GateSpec) -> GateVerdict:
    """``results``: ``evaluate_rows`` per model."""
    verdict = GateVerdict({}, {}, {}, [], {}, [])
    for name, r in results.items():
        verdict.figures[name], verdict.rows[name] = r["figures"], r["rows"]
        if r.get("augmentation_lift"):
            verdict.augmentation_lift[name] = r["augmentation_lift"]
        if r["rows"] == 0:
            verdict.failures.append(f"{name}: no rows passed the filters")
            continue
        base = output_baseline(store, name, run_date)
        verdict.baseline[name] = base or {"run_date": None, "figures": {}}
        checks = check(name, r["figures"], (base or {}).get("figures"), spec)
        verdict.checks += checks
        verdict.failures += failures(checks)
    return verdict
