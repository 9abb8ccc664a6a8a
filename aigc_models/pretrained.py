"""Pretrained models from local directories, behind the same interface as the families trained here.

- ``hf_causal_lm``: a Hugging Face ``transformers`` causal language model and its tokenizer, from a
  directory written by ``save_pretrained`` (``config.json``, weights, tokenizer files).
- ``hf_diffusion``: a ``diffusers`` ``UNet2DModel`` and noise scheduler, from a directory laid out like
  ``DDPMPipeline.save_pretrained`` (``unet/``, ``scheduler/``); sampled with DDIM, class-conditional when
  the U-Net has class embeddings (labels are then the class indices as strings unless ``classes`` names
  them).

Both load with ``local_files_only=True``: nothing is ever fetched from the hub. Both can be fine-tuned by the
generic training loop (their ``forward`` gives the usual loss) or used as they are, and an
``aigc_models.save`` checkpoint holds their full weights; loading it needs the base directory again, for the
architecture and tokenizer. The U-Net fixes the image shape (``output_shape``: its ``sample_size`` and
``in_channels``); the curated data must have that shape.
Optional dependencies: ``pip install '.[pretrained]'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import GenerativeModel, OptimizerSettings, row_generator
from .image import ImageModel
from .text import TextModel


def _require_dir(path: str, what: str) -> None:
    from pathlib import Path

    if not path or not Path(path).expanduser().is_dir():
        raise ValueError(f"{what}: path must be a local directory with a saved model, got {path!r} "
                         "(models are never downloaded)")


# ---- transformers causal LM --------------------------------------------------------------------------

@dataclasses.dataclass
class HFCausalLMConfig:
    path: str = ""  # a local directory written by save_pretrained (model and tokenizer)
    block_size: int = 256  # training window, and the most tokens a sequence may hold
    lr: float = 5e-5


class HFTokenizer:
    """A ``transformers`` tokenizer with the small surface ``TextModel`` uses."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.eos = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.bos = tok.bos_token_id if tok.bos_token_id is not None else self.eos
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos
        self.vocab_size = len(tok)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, tokens: Sequence[int]) -> str:
        return self._tok.decode(list(tokens), skip_special_tokens=True)


class HFCausalLM(TextModel):
    family = "hf_causal_lm"
    config_class = HFCausalLMConfig
    pretrained = True

    def __init__(self, config: HFCausalLMConfig) -> None:
        GenerativeModel.__init__(self, config)  # the tokenizer comes from the directory, not TextConfig
        _require_dir(config.path, "hf_causal_lm")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.lm = AutoModelForCausalLM.from_pretrained(config.path, local_files_only=True)
        self.tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(config.path, local_files_only=True))
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        self._max = min(config.block_size, limit) if limit else config.block_size

    @property
    def context(self) -> int:
        return self._max

    @property
    def max_context(self) -> int:  # type: ignore[override]
        return self._max

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings(lr=self.config.lr, betas=(0.9, 0.999), weight_decay=0.01)

    def logits(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out = self.lm(input_ids=tokens, past_key_values=state, use_cache=not self.training)
        return out.logits, out.past_key_values

    def prefill(self, rows: list[list[int]]) -> tuple[torch.Tensor, Any]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.tokenizer.pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
        return out.logits[:, -1], (out.past_key_values, mask)

    def decode_step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        past, mask = state
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = self.lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                      past_key_values=past, use_cache=True)
        return out.logits[:, -1], (out.past_key_values, mask)


# ---- diffusers U-Net ---------------------------------------------------------------------------------

@dataclasses.dataclass
class HFDiffusionConfig:
    path: str = ""  # a local directory with unet/ and scheduler/ (DDPMPipeline.save_pretrained layout)
    classes: list[str] = dataclasses.field(default_factory=list)  # names of the U-Net's class indices
    lr: float = 1e-4


def _unet_shape(unet_config: dict[str, Any]) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images a ``UNet2DModel`` config describes; refuses what cannot be an L or RGB
    image or cannot be sampled (an output with other channels than the input)."""
    size = unet_config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    c_in, c_out = int(unet_config["in_channels"]), int(unet_config["out_channels"])
    if c_in not in (1, 3):
        raise ValueError(f"hf_diffusion: the U-Net takes {c_in}-channel images; only 1 (L) or 3 (RGB) are supported")
    if c_out != c_in:
        raise ValueError(f"hf_diffusion: the U-Net predicts {c_out} channels for {c_in}-channel images; it must "
                         "predict the noise of every input channel")
    return (h, w, c_in)


class HFDiffusion(ImageModel):
    family = "hf_diffusion"
    config_class = HFDiffusionConfig
    pretrained = True

    def __init__(self, config: HFDiffusionConfig) -> None:
        super().__init__(config)
        _require_dir(config.path, "hf_diffusion")
        from diffusers import DDIMScheduler, UNet2DModel

        # low_cpu_mem_usage=False: what diffusers falls back to without `accelerate`, asked for explicitly so that
        # every load (each Ray actor's) does not warn about it
        self.unet = UNet2DModel.from_pretrained(config.path, subfolder="unet", local_files_only=True, low_cpu_mem_usage=False)
        self.scheduler = DDIMScheduler.from_pretrained(config.path, subfolder="scheduler", local_files_only=True)
        n_classes = self.unet.config.num_class_embeds or 0
        if n_classes and not config.classes:
            config.classes = [str(i) for i in range(n_classes)]
        if len(config.classes) != n_classes:
            raise ValueError(f"hf_diffusion: classes has {len(config.classes)} names, the U-Net has {n_classes} classes")
        self._shape = _unet_shape(dict(self.unet.config))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self._shape

    @classmethod
    def fixed_output_shape(cls, config: dict[str, Any]) -> tuple[int, int, int] | None:
        """Read from ``<path>/unet/config.json`` (the file ``save_pretrained`` writes) without loading weights."""
        import json
        from pathlib import Path

        found = Path(str(config.get("path") or "")).expanduser() / "unet" / "config.json"
        if not found.is_file():
            return None  # building the model reports a missing directory
        return _unet_shape(json.loads(found.read_text()))

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings(lr=self.config.lr, betas=(0.9, 0.999))

    def make_batch(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        pixels = np.asarray(columns["pixels"])
        if pixels.shape[1:] != self.output_shape:
            raise ValueError(f"image batch has shape {pixels.shape[1:]}, the U-Net expects {self.output_shape} (H, W, C)")
        batch = {"images": torch.tensor(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)}
        if self.config.classes:
            batch["labels"] = self.label_indices(list(columns["label"]))
        return batch

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, y = batch["images"], batch.get("labels")
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        xt = self.scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(self.unet(xt, t, class_labels=y).sample.float(), noise.float())
        return loss, {"loss": loss.detach()}

    def sampler_defaults(self) -> dict[str, Any]:
        return {**super().sampler_defaults(), "steps": 50, "eta": 0.0}

    def sample_chunk(self, y: torch.Tensor | None, seeds: list[int], s: dict[str, Any]) -> torch.Tensor:
        gens = [row_generator(seed) for seed in seeds]
        h, w, c = self.output_shape
        shape = (c, h, w)
        scheduler = self.scheduler.__class__.from_config(self.scheduler.config)  # its own step state per call
        scheduler.set_timesteps(int(s["steps"]))
        x = self.draw_noise(gens, shape)
        for t in scheduler.timesteps:
            eps = self.unet(x, t.to(self.device), class_labels=y).sample
            noise = self.draw_noise(gens, shape) if float(s["eta"]) > 0 else None  # each row's own generator
            x = scheduler.step(eps, t, x, eta=float(s["eta"]), variance_noise=noise).prev_sample
        return x
