"""Save/load: one self-describing safetensors file, exact round trip, refusal of anything else."""

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import aigc_models
from aigc_models import CheckpointError


@pytest.mark.parametrize("family,config,condition", [
    ("dcgan", {"resolution": 16, "classes": ["a", "b"], "z_dim": 8, "g_width": 8, "d_width": 8}, "b"),
    ("gpt", {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16}, "Hi"),
    ("vae", {"resolution": 16, "classes": ["a", "b"], "z_dim": 8, "width": 8}, "a"),
    ("ddpm", {"resolution": 16, "classes": ["a", "b"], "width": 8, "channel_mult": [1, 2], "timesteps": 20}, "b"),
    ("char_rnn", {"seq_len": 16, "embed_dim": 8, "hidden": 16, "n_layer": 2}, "Hi"),
])
def test_save_load_sample_gives_identical_bytes(tmp_path, family, config, condition):
    torch.manual_seed(3)
    model = aigc_models.build(family, config)
    path = tmp_path / "m.safetensors"
    sha = aigc_models.save(model, path)
    assert sha == aigc_models.sha256_file(path) and len(sha) == 64
    loaded = aigc_models.load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    a, b = model.sample([condition], [42]), loaded.sample([condition], [42])
    if model.modality == "image":
        assert np.array_equal(a[0], b[0])
    else:
        assert a == b


def test_refuses_unknown_keys_and_shape_mismatch(tmp_path):
    model = aigc_models.build("gpt", {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16})
    path = tmp_path / "m.safetensors"
    aigc_models.save(model, path)
    meta = aigc_models.read_metadata(path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="unknown keys"):
        aigc_models.load(tmp_path / "extra.safetensors")
    state["lm_head.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        aigc_models.load(tmp_path / "shape.safetensors")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refuses_a_pickle_and_never_executes_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError, match="not a safetensors model file"):
        aigc_models.load(path)
    assert not marker.exists()


def test_unknown_family_and_config_keys():
    with pytest.raises(CheckpointError, match="unknown model family"):
        aigc_models.build("nope", {})
    with pytest.raises(CheckpointError, match="unknown gpt config keys"):
        aigc_models.build("gpt", {"n_layers": 2})


def test_the_same_weights_and_metadata_always_give_the_same_file(tmp_path):
    """safetensors writes its metadata map in a random order; ours is sorted, so a checkpoint's sha256
    names its content (two runs that end with equal weights publish equal files)."""
    torch.manual_seed(0)
    model = aigc_models.build("vae", {"resolution": 16, "classes": ["a", "b"], "z_dim": 8, "width": 8})
    extra = {f"k{i}": str(i) for i in range(8)}  # enough keys that a random order shows
    shas = {aigc_models.save(model, tmp_path / f"{i}.safetensors", extra=extra) for i in range(6)}
    assert len(shas) == 1
    loaded = aigc_models.load(tmp_path / "0.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    state = {"step": 3, "t": torch.arange(5)}
    for i in range(4):
        aigc_models.save_state(state, tmp_path / f"s{i}.safetensors")
    assert len({aigc_models.sha256_file(tmp_path / f"s{i}.safetensors") for i in range(4)}) == 1
