"""The ``gate`` config section: the quality gate's figures, bounds and the augmentation-lift settings."""

from __future__ import annotations

from pydantic import Field, field_validator

from jobs.runtime.spec import Strict

# Gate figures and which way is better; ``absolute`` bounds are maxima for "lower" and minima for "higher".
GATE_METRICS = {
    "fd": "lower", "kid": "lower", "conditional_accuracy": "higher", "precision": "higher", "recall": "higher",
    "memorisation_rate": "lower", "augmentation_lift": "higher",
    "perplexity": "lower", "distinct_1": "higher", "distinct_2": "higher", "self_similarity": "lower", "copy_rate": "lower",
    "real_words": "higher", "real_texts": "higher",
}


class LiftSpec(Strict):
    """The augmentation-lift figure: held-out accuracy of a small classifier trained on ``k_per_label`` real
    rows per label plus ``synthetic_per_label`` of tonight's rows, minus the same classifier on the real rows only."""

    enabled: bool = True
    k_per_label: int = Field(10, ge=1)
    synthetic_per_label: int = Field(50, ge=1)
    steps: int = Field(200, ge=1)  # optimiser steps of each classifier, whatever its training-set size
    repeats: int = Field(3, ge=1)  # classifier pairs averaged (own rows and seeds each): one pair is +-0.02 noise
    seed: int = 0


class GateSpec(Strict):
    """The nightly quality gate. A candidate model is promoted only if its evaluation passes; tonight's output
    is published only if its figures pass. ``absolute`` bounds a figure (a maximum for lower-is-better figures
    such as ``fd``, a minimum for higher-is-better ones such as ``conditional_accuracy``); ``relative`` is the
    worsening tolerated against the baseline (the production model's evaluation for a candidate; the last
    published night's figures for tonight's output) as a fraction of the baseline's value, and never less than the
    figure's ``noise`` (absolute)."""

    enabled: bool = True
    samples_per_label: int = Field(50, ge=2)  # images per label sampled to evaluate a candidate image model
    text_samples: int = Field(48, ge=2)  # texts sampled to evaluate a candidate text model
    val_texts: int = Field(256, ge=1)  # held-out documents for perplexity
    max_rows: int = Field(2000, ge=10)  # rows per model of tonight's output scored by the gate (even stride)
    copy_overlap: float = Field(0.5, gt=0, le=1)  # copy_rate counts texts with more of their shingles in training
    absolute: dict[str, float] = Field(default_factory=lambda: {
        "conditional_accuracy": 0.5, "memorisation_rate": 0.2, "copy_rate": 0.5})  # real_words: English only, so opt-in
    # fd 1.25: the same recipe retrained with another seed gave up to 1.8x (VAE) and 2.2x (DCGAN) another seed's
    # FD on the demo data (benchmarks/image_quality.py); a tighter bound refuses good retrained models for noise.
    relative: dict[str, float] = Field(default_factory=lambda: {
        "fd": 1.25, "conditional_accuracy": 0.1, "perplexity": 0.25, "distinct_2": 0.25})
    # noise: a worsening this small (absolute) passes a relative bound whatever the ratio. FD has a floor (real
    # digits against other real digits of the same split: 0.019-0.027, benchmarks/image_quality.py --recipes real),
    # and near it the demo's recipe moved 0.039-0.094 over five training seeds (2.4x): a ratio of the baseline
    # alone would refuse good retrained models for noise.
    noise: dict[str, float] = Field(default_factory=lambda: {"fd": 0.075})
    lift: LiftSpec = Field(default_factory=lambda: LiftSpec())

    @field_validator("absolute", "relative", "noise")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in GATE_METRICS:
                raise ValueError(f"unknown figure {name!r} (known: {', '.join(GATE_METRICS)})")
        return v

    @field_validator("relative", "noise")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        for name, tol in v.items():
            if tol < 0:
                raise ValueError(f"{name}: a tolerated worsening is >= 0, got {tol}")
        return v
