"""The gate's distribution figures against independent computations and known cases."""

import numpy as np
import pytest
import scipy.linalg

from aigc_models import quality as q


def test_frechet_distance_matches_the_scipy_formula_and_is_zero_for_the_same_set():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 12)), rng.normal(0.3, 1.5, size=(300, 12))
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a.T), np.cov(b.T)
    expected = mu @ mu + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert q.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(q.frechet_distance(a, a)) < 1e-8


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    same = q.kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    other = q.kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(1.0, 1.0, size=(300, 8)))
    assert abs(same) < 0.05 and other > 10 * max(abs(same), 1e-3)


def test_precision_and_recall_separate_fidelity_from_coverage():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 2))
    collapsed = real[:40] * 0.1  # faithful (all near the mode) but covering little of the data
    p, r = q.precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.5
    p, r = q.precision_recall(real, rng.normal(8.0, 1.0, size=(400, 2)))  # elsewhere entirely
    assert p < 0.05 and r < 0.05


def test_text_diversity_figures():
    varied = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn every day"]
    looped = ["buy now buy now buy now"] * 3
    assert q.distinct_n(varied, 2) == 1.0 and q.distinct_n(looped, 2) == pytest.approx(2 / 15)
    assert q.self_similarity(looped) == 1.0 and q.self_similarity(varied) == 0.0
    assert q.distinct_n([], 1) == 0.0 and q.self_similarity(["one"]) == 0.0


def test_perplexity_is_lower_on_text_the_model_was_trained_on():
    import torch

    import aigc_models

    torch.manual_seed(0)
    model = aigc_models.build("char_rnn", {"hidden": 32, "n_layer": 1, "seq_len": 32})
    text = ["abcabcabcabcabcabcabcabcabcabc"] * 8
    before = q.perplexity(model, text)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = model.make_batch({"text": np.array(text)})
    for _ in range(60):
        loss, _ = model.forward("model", batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = q.perplexity(model, text)
    assert after < before / 4 and after >= 1.0

