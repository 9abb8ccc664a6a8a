"""Tiny random pretrained models saved as a team brings them (``save_pretrained`` folders), made inside the
tests: nothing is downloaded. Used by the adapters' model tests and by the pretrained nights."""

from __future__ import annotations

from pathlib import Path

import torch


def save_unet(path: Path, *, size: int, channels: int, classes: int, width: int = 8, timesteps: int = 50,
              seed: int = 0) -> Path:
    """A class-conditional ``diffusers`` U-Net and its DDPM scheduler in ``DDPMPipeline``'s layout."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(width, 2 * width),
                norm_num_groups=width // 2, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                num_class_embeds=classes).save_pretrained(path / "unet")
    DDPMScheduler(num_train_timesteps=timesteps).save_pretrained(path / "scheduler")
    return path


def save_lm(path: Path, corpus: list[str], *, n_embd: int, n_layer: int, seed: int = 0) -> Path:
    """A GPT-2-style ``transformers`` LM with a byte-level BPE tokenizer trained on ``corpus``."""
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from aigc_models.text import train_bpe

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(train_bpe(iter(corpus), 300)),
                                  bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(path)
    return path
