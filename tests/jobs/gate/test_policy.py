"""The gate's decisions: bounds, a candidate's promotion, tonight's verdict against the last published night."""

import math

import pytest

from jobs.gate.policy import candidate_baseline, check, failures, judge_candidate, judge_night, needs_evaluation
from jobs.gate.spec import GateSpec


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


def test_a_relative_bound_is_never_tighter_than_the_figures_noise():
    """FD near its floor (real digits against real digits: 0.019-0.027) moves 2.4x between training seeds: a ratio
    of a 0.03 baseline alone would refuse a 0.1 night; the default noise of 0.075 lets it pass, and a real
    worsening (the old N(0, I) VAE's 0.2) still fails."""
    base = {"fd": 0.03, "distinct_2": 0.9}
    default = GateSpec(absolute={}, relative={"fd": 1.25, "distinct_2": 0.25})
    assert default.noise == {"fd": 0.075}
    ok = check("m", {"fd": 0.104, "distinct_2": 0.9}, base, default)
    assert all(c["passed"] for c in ok) and ok[0]["bound"] == pytest.approx(0.105)
    assert failures(check("m", {"fd": 0.2}, base, default)) == ["m: fd 0.2 > 0.105 (relative bound)"]
    ratio_only = GateSpec(absolute={}, relative={"fd": 1.25}, noise={})
    assert failures(check("m", {"fd": 0.07}, base, ratio_only)) == ["m: fd 0.07 > 0.0675 (relative bound)"]
    assert check("m", {"fd": 4.0}, {"fd": 2.0}, default)[0]["bound"] == pytest.approx(4.5)  # the ratio when it is wider


def test_a_candidate_with_another_tokenizer_is_not_judged_on_per_token_perplexity():
    """Moving a text model from bytes to BPE multiplies its per-token perplexity (each token carries several
    bytes): the gate leaves perplexity out of that comparison, says so, and still compares the rest."""
    import aigc_models
    from aigc_models.text import train_bpe
    from jobs.gate.figures import tokens_of

    small = {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16}
    bpe_json = train_bpe(["the cat sat on the mat", "a function returns a value"] * 20, 300)
    byte_a, byte_b = (tokens_of(aigc_models.build("gpt", small)) for _ in range(2))
    bpe = tokens_of(aigc_models.build("gpt", {**small, "tokenizer": "bpe", "vocab_size": 300, "tokenizer_json": bpe_json}))
    assert byte_a == byte_b != bpe
    spec = GateSpec(absolute={}, relative={"perplexity": 0.25, "distinct_2": 0.25})
    production = {"version": "p", "figures": {"perplexity": 7.0, "distinct_2": 0.9}, "tokens": byte_a}
    candidate = {"figures": {"perplexity": 49.0, "distinct_2": 0.95}, "tokens": bpe}
    baseline = candidate_baseline(candidate, production)
    assert baseline["figures"] == {"distinct_2": 0.9} and "perplexity" in baseline["not_compared"][0]
    assert judge_candidate("m", "c", {}, candidate["figures"], baseline, spec).promoted
    same = candidate_baseline({**candidate, "tokens": byte_a}, production)  # same tokenizer: compared, refused
    assert same["figures"] == production["figures"] and not judge_candidate("m", "c", {}, candidate["figures"], same, spec).promoted


def test_a_non_finite_figure_fails():
    spec = GateSpec(absolute={"kid": 1.0}, relative={})
    assert failures(check("m", {"kid": math.nan}, None, spec)) == ["m: kid nan > 1 (absolute bound)"]


def test_unknown_figures_are_config_errors_naming_the_key():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^gate\.absolute: unknown figure 'fid'"):
        load_config(None, ["gate.absolute={fid: 3}"])
    with pytest.raises(ConfigError, match=r"^gate\.relative: fd: a tolerated worsening is >= 0"):
        load_config(None, ["gate.relative={fd: -1}"])


def test_a_candidate_with_non_finite_training_metrics_is_refused_without_an_evaluation():
    spec = GateSpec(absolute={"fd": 10.0}, relative={})
    assert not needs_evaluation(spec, {"loss_d": math.nan}) and needs_evaluation(spec, {"loss_d": 0.3})
    assert not needs_evaluation(spec.model_copy(update={"enabled": False}), {"loss_d": 0.3})
    verdict = judge_candidate("m", "v2", {"loss_d": math.inf, "loss_g": 1.0}, None, None, spec)
    assert not verdict.promoted and verdict.failures == ["m: non-finite final training metrics loss_d"]


def test_a_candidate_is_judged_on_absolute_bounds_and_against_production():
    spec = GateSpec(absolute={"fd": 10.0}, relative={"fd": 0.5})
    production = {"version": "v1", "figures": {"fd": 4.0}}
    better = judge_candidate("m", "v2", {"loss": 0.1}, {"fd": 5.0}, production, spec)
    assert better.promoted and [c["kind"] for c in better.checks] == ["absolute", "relative"]
    worse = judge_candidate("m", "v2", {"loss": 0.1}, {"fd": 6.5}, production, spec)  # 6.5 > 4 * 1.5
    assert not worse.promoted and worse.failures == ["m: fd 6.5 > 6 (relative bound)"]
    assert judge_candidate("m", "v2", {"loss": 0.1}, None, None, spec).promoted  # the gate off: nothing to check


def test_tonight_is_judged_against_the_last_published_night_before_it(tmp_path):
    from jobs.store import layout
    from jobs.store.storage import Store

    store = Store(str(tmp_path))
    for night, fd in (("2026-01-01", 2.0), ("2026-01-03", 4.0), ("2026-01-05", 1.0)):
        store.write_json({"gate": {"figures": {"gan": {"fd": fd}}}}, layout.manifest(layout.GENERATED, night))
    spec = GateSpec(absolute={}, relative={"fd": 0.5})
    results = {"gan": {"figures": {"fd": 5.0}, "rows": 10}, "lm": {"figures": {}, "rows": 0}}
    verdict = judge_night(results, store, "2026-01-04", spec)  # the baseline is 01-03's (not 01-05's, a later night)
    assert verdict.baseline["gan"] == {"run_date": "2026-01-03", "figures": {"fd": 4.0}}
    assert verdict.failures == ["lm: no rows passed the filters"] and not verdict.passed  # 5 <= 4 * 1.5 passes
    assert judge_night({"gan": results["gan"]}, store, "2026-01-02", spec).failures == ["gan: fd 5 > 3 (relative bound)"]
    assert verdict.as_dict()["passed"] is False and verdict.as_dict()["rows"] == {"gan": 10, "lm": 0}
