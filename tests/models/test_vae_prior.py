"""The VAE's fitted latent distribution: per-class Gaussians fitted to the training images' posterior means after
training, summed over batches (and workers), stored with the weights, recorded as the ``prior`` sampler setting."""

import numpy as np
import pytest
import torch

import aigc_models
from aigc_models.training import fit_to_data

CONFIG = {"resolution": 16, "channels": 1, "classes": ["a", "b", "c"], "z_dim": 4, "width": 8}


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b"] * (n // 2))  # "c" has no images
    pixels = rng.integers(0, 255, (n, 16, 16, 1), dtype=np.uint8)
    pixels[labels == "a"] //= 4  # the two classes' latents differ
    return pixels, labels


def _model() -> aigc_models.VAE:
    torch.manual_seed(0)
    return aigc_models.build("vae", CONFIG)


def _batches(model, pixels, labels, size):
    return [model.make_batch({"pixels": pixels[i:i + size], "label": labels[i:i + size]}) for i in range(0, len(labels), size)]


def test_the_fit_is_each_class_mean_and_covariance_of_the_posterior_means_whatever_the_batching():
    pixels, labels = _data()
    model = _model()
    assert model.sampler_defaults()["prior"] == "standard" and not int(model.prior_fitted)
    fit_to_data(model, _batches(model, pixels, labels, 7))
    batch = model.make_batch({"pixels": pixels, "label": labels})
    with torch.no_grad():
        mu = model.encode(batch["images"], batch["labels"])[0].double()
    for c, name in enumerate("ab"):
        rows = mu[torch.from_numpy(labels == name)]
        assert torch.allclose(model.prior_mean[c].double(), rows.mean(0), atol=1e-5)
        scale = model.prior_scale[c].double()
        assert torch.allclose(scale @ scale.T, torch.cov(rows.T), atol=1e-4)
    assert torch.equal(model.prior_mean[2], torch.zeros(4)) and torch.equal(model.prior_scale[2], torch.eye(4))  # no images
    assert not torch.allclose(model.prior_mean[0], model.prior_mean[1], atol=1e-3)
    other = _model()
    fit_to_data(other, _batches(other, pixels, labels, 40))  # one batch: the same sums
    assert torch.allclose(other.prior_mean, model.prior_mean, atol=1e-6)
    assert torch.allclose(other.prior_scale, model.prior_scale, atol=1e-5)
    assert model.sampler_defaults()["prior"] == "fitted" and int(model.prior_fitted) == 1


def test_fitted_sampling_is_seeded_and_batch_invariant_and_differs_from_the_standard_prior():
    pixels, labels = _data()
    model = _model()
    fit_to_data(model, _batches(model, pixels, labels, 16))
    together = model.sample(["a", "b", "a"], seeds=[1, 2, 3], chunk=4)
    assert np.array_equal(model.sample(["b"], seeds=[2], chunk=4)[0], together[1])
    assert np.array_equal(model.sample(["a", "b", "a"], seeds=[1, 2, 3], chunk=4)[0], together[0])
    standard = model.sample(["a", "b", "a"], seeds=[1, 2, 3], chunk=4, prior="standard")
    assert not np.array_equal(standard[0], together[0])
    with pytest.raises(ValueError, match="prior must be one of fitted, standard"):
        model.sample(["a"], seeds=[1], prior="learned")


def test_an_unfitted_model_refuses_the_fitted_prior_by_name():
    with pytest.raises(ValueError, match="no fitted latent distribution"):
        _model().sample(["a"], seeds=[1], prior="fitted")


def test_the_fit_is_saved_and_a_file_from_before_the_fit_loads_sampling_as_it_did(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    pixels, labels = _data()
    model = _model()
    before = model.sample(["a", "b"], seeds=[5, 6])  # N(0, I), as VAEs sampled before the fit existed
    fit_to_data(model, _batches(model, pixels, labels, 16))
    path = tmp_path / "m.safetensors"
    aigc_models.save(model, path)
    loaded = aigc_models.load(path)
    assert loaded.sampler_defaults()["prior"] == "fitted"
    assert all(np.array_equal(a, b) for a, b in zip(loaded.sample(["a", "b"], seeds=[5, 6]), model.sample(["a", "b"], seeds=[5, 6])))
    with safe_open(str(path), framework="pt") as f:  # the same file as an older version wrote it: no prior keys
        metadata = f.metadata()
    old = {k: v for k, v in load_file(path).items() if not k.startswith("prior_")}
    save_file(old, tmp_path / "old.safetensors", metadata=metadata)
    legacy = aigc_models.load(tmp_path / "old.safetensors")
    assert legacy.sampler_defaults()["prior"] == "standard"
    assert all(np.array_equal(a, b) for a, b in zip(legacy.sample(["a", "b"], seeds=[5, 6]), before))
