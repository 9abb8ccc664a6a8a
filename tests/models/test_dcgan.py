"""DCGAN with a tiny config on CPU: shapes, learning, seeded sameness, batch invariance."""

import numpy as np
import pytest
import torch

import aigc_models
from aigc_models.dcgan import DCGANConfig

CLASSES = ["0", "1", "2"]


def tiny(**kw):
    return aigc_models.build("dcgan", {"resolution": 16, "channels": 1, "classes": CLASSES, "z_dim": 8,
                                       "g_width": 8, "d_width": 8, **kw})


def batch(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return model.make_batch({"pixels": rng.integers(0, 256, (n, 16, 16, 1), dtype=np.uint8),
                             "label": np.array([CLASSES[i % 3] for i in range(n)])})


def test_shapes_and_finite_losses():
    torch.manual_seed(0)
    m = tiny()
    b = batch(m)
    assert b["images"].shape == (6, 1, 16, 16) and b["images"].min() >= -1 and b["images"].max() <= 1
    assert m.phases == ("discriminator", "generator")
    for phase in m.phases:
        loss, metrics = m(phase, b)
        assert loss.ndim == 0 and torch.isfinite(loss)
    images = m.sample(["0", "2"], [1, 2])
    assert [i.shape for i in images] == [(16, 16, 1)] * 2 and images[0].dtype == np.uint8


def test_rgb_and_64px_generator_shape():
    m = aigc_models.build("dcgan", {"resolution": 64, "channels": 3, "classes": [], "g_width": 4, "d_width": 4, "z_dim": 4})
    img = m.sample([None], [7])[0]
    assert img.shape == (64, 64, 3)


def test_discriminator_learns_to_separate_a_fixed_batch():
    """A few discriminator steps on a fixed batch lower its loss: the loss and the optimiser wiring work."""
    torch.manual_seed(0)
    m = tiny()
    b = batch(m, n=16)
    opt = torch.optim.Adam(m.phase_parameters("discriminator"), lr=2e-3)
    losses = []
    for _ in range(25):
        torch.manual_seed(1)  # the same fakes every step: an overfit test
        loss, _ = m("discriminator", b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_generator_step_only_touches_generator_parameters():
    m = tiny()
    g = set(map(id, m.phase_parameters("generator")))
    d = set(map(id, m.phase_parameters("discriminator")))
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert g and d and not g & d and g | d == trainable
    assert not trainable & set(map(id, m.generator_ema.parameters()))  # EMA weights are never optimised


def test_ema_follows_the_generator_and_is_what_samples():
    m = tiny()
    with torch.no_grad():
        for p in m.generator.parameters():
            p.add_(0.1)
    before = [p.clone() for p in m.generator_ema.parameters()]
    m.after_step("discriminator")
    assert all(torch.equal(a, b) for a, b in zip(before, m.generator_ema.parameters()))
    m.after_step("generator")
    moved = [float((e - b).abs().max()) for e, b in zip(m.generator_ema.parameters(), before)]
    assert all(0 < x < 0.1 for x in moved) and int(m.ema_steps) == 1
    ema_sample = m.sample(["0"], [3])[0]
    m.config.ema_decay = 0.0
    assert not np.array_equal(ema_sample, m.sample(["0"], [3])[0])  # raw generator differs from its average


def test_seeded_sampling_is_repeatable_and_batch_invariant():
    m = tiny()
    conditions, seeds = ["0", "1", "2", "1"], [11, 12, 13, 14]
    together = m.sample(conditions, seeds)
    alone = [m.sample([c], [s])[0] for c, s in zip(conditions, seeds)]
    reordered = m.sample(conditions[::-1], seeds[::-1])[::-1]
    for a, b, c in zip(together, alone, reordered):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(together[0], m.sample(["0"], [99])[0])  # the seed matters
    assert not np.array_equal(m.sample(["0"], [5])[0], m.sample(["1"], [5])[0])  # so does the label


def test_unknown_label_and_wrong_shape_are_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="not among the model's classes"):
        m.sample(["7"], [1])
    with pytest.raises(ValueError, match="model expects"):
        m.make_batch({"pixels": np.zeros((2, 8, 8, 1), np.uint8), "label": np.array(["0", "1"])})


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        DCGANConfig(resolution=24)
    with pytest.raises(ValueError, match="channels"):
        DCGANConfig(channels=2)
