"""Pretrained adapters: tiny randomly initialised transformers / diffusers models saved to a temp directory,
loaded from there only, and used through the same interface as the families trained here."""

import numpy as np
import pytest
import torch

import aigc_models
from tests.pretrained_folders import save_lm, save_unet


@pytest.fixture(scope="module")
def hf_lm_dir(tmp_path_factory):
    corpus = ["Fresh bread every morning.", "Our ovens never sleep.", "Crème brûlée et café."] * 30
    return save_lm(tmp_path_factory.mktemp("hf-lm"), corpus, n_embd=32, n_layer=2)


@pytest.fixture(scope="module")
def hf_unet_dir(tmp_path_factory):
    return save_unet(tmp_path_factory.mktemp("hf-unet"), size=16, channels=1, classes=3, width=16, timesteps=100)


def test_hf_causal_lm_samples_seeded_batched_and_round_trips(hf_lm_dir, tmp_path):
    model = aigc_models.build("hf_causal_lm", {"path": str(hf_lm_dir), "block_size": 48})
    assert model.modality == "text" and model.num_parameters() > 0
    prompts, seeds = ["Fresh bread", "", "Our ovens never sleep and"], [1, 2, 3]
    alone = model.sample(prompts, seeds, max_new_tokens=8)
    assert all(a.startswith(p) and len(a) > len(p) for a, p in zip(alone, prompts))
    assert model.sample(prompts[:1], seeds[:1], max_new_tokens=8) == alone[:1]  # seeded, batch-invariant
    assert model.sample(prompts, seeds, max_new_tokens=8, batched=True) == alone  # left padding + attention mask
    batch = model.make_batch({"text": np.array(["Fresh bread every morning."] * 4)})
    loss, _ = model("model", batch)
    assert torch.isfinite(loss)
    path = tmp_path / "lm.safetensors"
    aigc_models.save(model, path)  # the tied LM head is stored once
    assert "aliases" in aigc_models.read_metadata(path)
    assert aigc_models.load(path).sample(prompts, seeds, max_new_tokens=8) == alone


def test_hf_diffusion_samples_per_row_and_fine_tunes(hf_unet_dir):
    model = aigc_models.build("hf_diffusion", {"path": str(hf_unet_dir)})
    assert model.config.classes == ["0", "1", "2"]
    assert model.output_shape == (16, 16, 1) == aigc_models.HFDiffusion.fixed_output_shape({"path": str(hf_unet_dir)})
    images = model.sample(["0", "2", "1"], [5, 6, 7], steps=4)
    assert all(i.shape == (16, 16, 1) and i.dtype == np.uint8 for i in images)
    assert np.array_equal(model.sample(["2"], [6], steps=4)[0], images[1])
    noisy = model.sample(["0", "1"], [1, 2], steps=4, eta=1.0)
    assert np.array_equal(model.sample(["1"], [2], steps=4, eta=1.0)[0], noisy[1])
    from tests.models.test_families import loss_on, train

    pixels = np.zeros((6, 16, 16, 1), np.uint8)
    pixels[:3, 4:12, 6:10] = 255  # "0": a bar; "1": a beam
    pixels[3:, 6:10, 2:14] = 255
    batch = model.make_batch({"pixels": pixels, "label": np.array(["0"] * 3 + ["1"] * 3)})
    weights = {k: v.clone() for k, v in model.unet.state_dict().items()}
    before = loss_on(model, batch, "model")
    train(model, batch, 30)  # optimiser steps on the loaded U-Net, as a fine-tuning run takes them
    assert loss_on(model, batch, "model") < 0.8 * before
    assert not torch.equal(model.unet.conv_in.weight, weights["conv_in.weight"])
    assert not np.array_equal(model.sample(["2"], [6], steps=4)[0], images[1])  # it samples from the tuned weights
    again = aigc_models.build("hf_diffusion", {"path": str(hf_unet_dir)})  # the folder's weights are untouched
    assert np.array_equal(again.sample(["2"], [6], steps=4)[0], images[1])


def test_missing_or_remote_paths_are_refused_without_a_download(tmp_path):
    for family in ("hf_causal_lm", "hf_diffusion"):
        with pytest.raises(ValueError, match="must be a local directory"):
            aigc_models.build(family, {"path": "gpt2"})  # a hub id is not a directory: never fetched
        with pytest.raises(ValueError, match="must be a local directory"):
            aigc_models.build(family, {"path": str(tmp_path / "missing")})


def test_hf_diffusion_refuses_a_unet_that_cannot_make_l_or_rgb_images(tmp_path):
    from diffusers import UNet2DModel

    UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8,), norm_num_groups=4,
                down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), layers_per_block=1,
                ).save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="only 1 \\(L\\) or 3 \\(RGB\\)"):
        aigc_models.HFDiffusion.fixed_output_shape({"path": str(tmp_path)})
