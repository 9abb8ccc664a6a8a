"""The gate's decisions (pure) and the retrain policy on a real registry."""

import math

import pytest

from jobs.evaluate import check, failures
from jobs.specs import GateSpec


def test_absolute_bounds_follow_each_figures_direction():
    spec = GateSpec(absolute={"fd": 10.0, "conditional_accuracy": 0.8}, relative={})
    checks = check("m", {"fd": 12.0, "conditional_accuracy": 0.9, "recall": 0.1}, None, spec)
    assert [(c["metric"], c["passed"]) for c in checks] == [("fd", False), ("conditional_accuracy", True)]
    assert failures(checks) == ["m: fd 12 > 10 (absolute bound)"]


def test_relative_bounds_tolerate_a_fraction_of_the_baseline():
    spec = GateSpec(absolute={}, relative={"fd": 0.5, "distinct_2": 0.1})
    base = {"fd": 4.0, "distinct_2": 0.5}
    ok = check("m", {"fd": 5.9, "distinct_2": 0.46}, base, spec)
    assert all(c["passed"] for c in ok) and [c["bound"] for c in ok] == pytest.approx([6.0, 0.45])
    bad = check("m", {"fd": 6.1, "distinct_2": 0.44}, base, spec)
    assert failures(bad) == ["m: fd 6.1 > 6 (relative bound)", "m: distinct_2 0.44 < 0.45 (relative bound)"]
    assert check("m", {"fd": 100.0}, None, spec) == []  # no baseline yet: nothing relative to check


def test_a_non_finite_figure_fails():
    spec = GateSpec(absolute={"kid": 1.0}, relative={})
    assert failures(check("m", {"kid": math.nan}, None, spec)) == ["m: kid nan > 1 (absolute bound)"]


def test_unknown_figures_are_config_errors_naming_the_key():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^gate\.absolute: unknown figure 'fid'"):
        load_config(None, ["gate.absolute={fid: 3}"])
    with pytest.raises(ConfigError, match=r"^gate\.relative: fd: a tolerated worsening is a fraction >= 0"):
        load_config(None, ["gate.relative={fd: -1}"])


def test_retrain_policy_on_the_tiny_registry(tiny_night):
    from jobs.train import retrain_reason

    cfg, store, result = tiny_night
    gan, version = cfg.model("tiny-gan"), result["preprocess"]["dataset_version"]
    assert retrain_reason(store, gan, cfg.train, version, "2026-11-21") is None
    assert retrain_reason(store, gan, cfg.train, "other", "2026-11-21").startswith("dataset changed")
    changed = gan.model_copy(update={"seed": 5})
    assert retrain_reason(store, changed, cfg.train, version, "2026-11-21").startswith("model or train config changed")
    relaxed = cfg.train.model_copy(update={"retrain": cfg.train.retrain.model_copy(update={"on_config_change": False})})
    assert retrain_reason(store, changed, relaxed, version, "2026-11-21") is None
    weekly = cfg.train.model_copy(update={"retrain": cfg.train.retrain.model_copy(update={"every_days": 7})})
    assert retrain_reason(store, gan, weekly, version, "2099-01-01").startswith("cadence: production is")
    assert retrain_reason(store, cfg.model("tiny-gpt").model_copy(update={"name": "never-trained"}), cfg.train,
                          version, "2026-11-21") == "no production version yet"
