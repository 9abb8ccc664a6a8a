"""Generative models in plain PyTorch, one file per family, all behind ``GenerativeModel``.

    from aigc_models import build, save, load
    model = build("dcgan", {"classes": ["0", "1"]})
    images = model.sample(["0", "1"], seeds=[1, 2])   # uint8 [H, W, C] arrays
"""

from .base import GenerativeModel, OptimizerSettings, row_generator
from .char_rnn import CharRNN, CharRNNConfig
from .checkpoint import CheckpointError, build, load, load_state, read_metadata, save, save_state, sha256_file
from .dcgan import DCGAN, DCGANConfig
from .ddpm import DDPM, DDPMConfig
from .gpt import GPT, GPTConfig
from .pretrained import HFCausalLM, HFCausalLMConfig, HFDiffusion, HFDiffusionConfig
from .vae import VAE, VAEConfig

FAMILIES: dict[str, type[GenerativeModel]] = {
    cls.family: cls for cls in (DCGAN, VAE, DDPM, GPT, CharRNN, HFCausalLM, HFDiffusion)}

__all__ = [
    "FAMILIES", "GenerativeModel", "OptimizerSettings", "CheckpointError", "CharRNN", "CharRNNConfig", "DCGAN",
    "DCGANConfig", "DDPM", "DDPMConfig", "GPT", "GPTConfig", "HFCausalLM", "HFCausalLMConfig", "HFDiffusion",
    "HFDiffusionConfig", "VAE", "VAEConfig", "build", "load", "load_state", "save_state",
    "read_metadata", "row_generator", "save", "sha256_file",
]
