"""Every family through the one interface: it learns, samples what it promises, and a row's output depends
only on its seed, condition and the weights."""

import numpy as np
import pytest
import torch

import aigc_models

IMAGE = {"resolution": 16, "channels": 1, "classes": ["a", "b"]}
TINY = {
    "dcgan": {**IMAGE, "z_dim": 8, "g_width": 8, "d_width": 8},
    "vae": {**IMAGE, "z_dim": 8, "width": 8, "kl_warmup_steps": 10},
    "ddpm": {**IMAGE, "width": 8, "channel_mult": [1, 2], "timesteps": 50, "ema_decay": 0.0},
    "gpt": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16},
    "char_rnn": {"seq_len": 32, "embed_dim": 8, "hidden": 32, "n_layer": 1},
}
CONDITIONS = {"image": ["a", "b", "a", "b", "a"], "text": ["Hi", "", "Fresh bread ", "é", "Hi"]}
SAMPLER = {"ddpm": {"steps": 4}, "gpt": {"max_new_tokens": 12}, "char_rnn": {"max_new_tokens": 12}}


def build(family, **kw):
    torch.manual_seed(0)
    return aigc_models.build(family, {**TINY[family], **kw})


def fixed_batch(model):
    rng = np.random.default_rng(0)
    if model.modality == "image":
        pixels = np.zeros((8, 16, 16, 1), np.uint8)
        pixels[:4, 4:12, 6:10] = 255  # "a": a bar
        pixels[4:, 6:10, 2:14] = 255  # "b": a beam
        pixels = np.clip(pixels.astype(int) + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        return model.make_batch({"pixels": pixels, "label": np.array(["a"] * 4 + ["b"] * 4)})
    return model.make_batch({"text": np.array(["Fresh bread every morning.", "Our ovens never sleep."] * 3)})


def loss_on(model, batch, phase):
    torch.manual_seed(123)  # the same noise, timesteps and dropout for every evaluation
    with torch.no_grad():
        return float(model(phase, batch)[0])


def train(model, batch, steps):
    (phase,) = model.phases
    s = model.optimizer_settings(phase)
    opt = torch.optim.AdamW(model.phase_parameters(phase), lr=s.lr * 3, betas=s.betas)
    for _ in range(steps):
        opt.zero_grad()
        loss, metrics = model(phase, batch)
        loss.backward()
        opt.step()
        model.after_step(phase)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
    return model


@pytest.mark.parametrize("family", ["vae", "ddpm", "gpt", "char_rnn"])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(family):
    model = build(family)
    batch = fixed_batch(model)
    before = loss_on(model, batch, "model")
    train(model, batch, 40)
    assert loss_on(model, batch, "model") < 0.7 * before


@pytest.mark.parametrize("threads", [1, 2])  # Ray actors run torch with one thread
@pytest.mark.parametrize("family", list(TINY))
def test_sampling_is_seeded_typed_and_batch_invariant(family, threads, monkeypatch):
    model = build(family)
    if model.modality == "image":  # compare the floats before rounding: a last-bit drift must fail here too
        from aigc_models.image import ImageModel

        monkeypatch.setattr(ImageModel, "to_uint8", staticmethod(lambda t: list(t.float().permute(0, 2, 3, 1).cpu().numpy())))
    conditions = CONDITIONS[model.modality] * 4  # 20 rows: CPU kernels switch algorithms at larger batches
    seeds = list(range(11, 31))
    sampler = SAMPLER.get(family, {})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        together = model.sample(conditions, seeds, **sampler)
        alone = [model.sample([c], [s], **sampler)[0] for c, s in zip(conditions, seeds)]
        split = model.sample(conditions[:7], seeds[:7], **sampler) + model.sample(conditions[7:], seeds[7:], **sampler)
    finally:
        torch.set_num_threads(before)
    if model.modality == "image":
        assert all(a.shape == (16, 16, 1) for a in together)
        assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(together, alone, split))
        assert not np.array_equal(together[0], together[2])  # different seeds, different images
    else:
        assert all(isinstance(t, str) and t.startswith(c) for t, c in zip(together, conditions))
        assert together == alone == split
        assert together[0] != together[4]  # the same prompt with another seed
    again = model.sample(conditions[:1], seeds[:1], **sampler)[0]
    assert np.array_equal(again, together[0]) if model.modality == "image" else again == together[0]
    if model.modality == "image":  # and the real rounding: uint8 [H, W, C], (x + 1) * 127.5 rounded half to even
        monkeypatch.undo()
        real = model.sample(conditions[:3], seeds[:3], **sampler)
        expected = [np.round((np.clip(f, -1, 1) + 1) * np.float32(127.5)).astype(np.uint8) for f in together[:3]]
        assert all(r.dtype == np.uint8 and r.shape == (16, 16, 1) for r in real)
        assert all(np.array_equal(r, e) for r, e in zip(real, expected))


def test_ddim_steps_eta_and_guidance():
    model = build("ddpm")
    train(model, fixed_batch(model), 5)  # fresh blocks start as the identity: the label would not matter yet
    base = model.sample(["a", "b"], [1, 2], steps=5)
    assert all(np.array_equal(x, y) for x, y in zip(base, model.sample(["a", "b"], [1, 2], steps=5)))
    for change in ({"steps": 2}, {"eta": 1.0}, {"guidance": 4.0}):
        other = model.sample(["a", "b"], [1, 2], steps=5, **{k: v for k, v in change.items() if k != "steps"}) \
            if "steps" not in change else model.sample(["a", "b"], [1, 2], **change)
        assert not np.array_equal(base[0], other[0]), change
    noisy = model.sample(["a"], [1], steps=5, eta=1.0)[0]
    assert np.array_equal(noisy, model.sample(["b", "a"], [9, 1], steps=5, eta=1.0)[1])  # eta noise is per row
    with pytest.raises(ValueError, match="steps must be in 1..50"):
        model.sample(["a"], [1], steps=500)


def test_vae_kl_warmup_and_reconstruction():
    model = build("vae")
    assert model.beta() == 0.0
    for _ in range(5):
        model.after_step("model")
    assert model.beta() == pytest.approx(0.5)
    images = np.zeros((3, 16, 16, 1), np.uint8)
    out = model.reconstruct(images, ["a", "b", "a"])
    assert len(out) == 3 and out[0].shape == (16, 16, 1) and out[0].dtype == np.uint8


def test_char_rnn_state_matches_a_full_forward():
    model = build("char_rnn").eval()
    tokens = torch.tensor([[256, 72, 105, 33, 32, 70]])
    full, _ = model.logits(tokens)
    logits, state = model.logits(tokens[:, :3])
    steps = [logits[:, -1]]
    for t in range(3, tokens.shape[1]):
        logits, state = model.logits(tokens[:, t:t + 1], state)
        steps.append(logits[:, -1])
    assert torch.allclose(torch.stack(steps[:-1], 1), full[:, 2:-1], atol=1e-5)
    long = model.sample(["x"], [1], max_new_tokens=300, temperature=1.0, top_k=0, top_p=1.0)[0]
    assert len(long.encode()) > 40  # no context limit: a long continuation is fine


@pytest.mark.parametrize("family,bad,match", [
    ("vae", {"recon": "l1"}, "recon"),
    ("ddpm", {"channel_mult": [1, 2, 2, 2, 2]}, "halves resolution"),
    ("ddpm", {"schedule": "sqrt"}, "schedule"),
    ("char_rnn", {"hidden": 0}, "hidden"),
    ("vae", {"resolution": 12}, "power of two"),
])
def test_config_errors_name_the_field(family, bad, match):
    with pytest.raises(ValueError, match=match):
        aigc_models.build(family, {**TINY[family], **bad})


@pytest.mark.parametrize("family", ["gpt", "char_rnn"])
def test_cached_sampling_equals_recomputing_token_for_token(family):
    model = train(build(family), fixed_batch(build(family)), 20)  # a peaked distribution: any drift would show
    prompts, seeds = ["Fresh ", "Our o", ""], [5, 6, 7]
    for greedy in (True, False):
        settings = {"max_new_tokens": 20, **({"temperature": 0} if greedy else {"temperature": 1.0, "top_k": 0})}
        cached = model.sample(prompts, seeds, **settings)
        assert cached == model.sample(prompts, seeds, cache=False, **settings)
        assert all(len(c) > len(p) for c, p in zip(cached, prompts))


@pytest.mark.parametrize("family", ["gpt", "char_rnn"])
def test_batched_left_padded_sampling_matches_row_by_row(family):
    model = train(build(family), fixed_batch(build(family)), 20)
    prompts, seeds = ["Fresh bread every", "O", "", "Our ovens never sl", "é"], [1, 2, 3, 4, 5]
    for settings in ({"temperature": 0}, {"temperature": 1.0, "top_k": 0}, {"temperature": 0.8, "stop": [" "]}):
        alone = model.sample(prompts, seeds, max_new_tokens=16, **settings)
        batched = model.sample(prompts, seeds, max_new_tokens=16, batched=True, **settings)
        assert batched == alone, settings
        assert all(b.startswith(p) for b, p in zip(batched, prompts))
    if family == "gpt":  # rows near the context limit get their own, smaller budget
        long = ["x" * 25, "y"]
        assert model.sample(long, [1, 2], max_new_tokens=16, batched=True) == model.sample(long, [1, 2], max_new_tokens=16)


@pytest.mark.parametrize("family,extra", [("vae", {}), ("ddpm", {"channel_mult": [1, 2, 2, 2]}), ("dcgan", {"spectral_norm": False})])
def test_rgb_64px_models_sample_rgb_64px(family, extra):
    model = build(family, resolution=64, channels=3, classes=[], **extra)
    images = model.sample([None, None], [1, 2], **SAMPLER.get(family, {}))
    assert [i.shape for i in images] == [(64, 64, 3)] * 2
    batch = model.make_batch({"pixels": np.zeros((2, 64, 64, 3), np.uint8), "label": np.array([None, None])})
    assert all(torch.isfinite(model(phase, batch)[0]) for phase in model.phases)
