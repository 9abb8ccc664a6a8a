"""What every image family shares: the config fields the data decides, label handling, batches in and
uint8 images out, per-row noise.

Images are ``[-1, 1]`` floats ``[B, C, H, W]`` inside a model and ``uint8 [H, W, C]`` arrays outside; a
model's ``output_shape`` says which ``(H, W, C)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .base import GenerativeModel, row_generator


@dataclasses.dataclass
class ImageConfig:
    resolution: int = 32  # 2**k, at least 8
    channels: int = 1  # 1 (L) or 3 (RGB)
    classes: list[str] = dataclasses.field(default_factory=list)  # empty: unconditional

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


class ImageModel(GenerativeModel):
    modality = "image"
    config: Any  # an ImageConfig subclass, or a pretrained family's own config

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image the model makes and takes. Families trained here read it from their
        config (which the curated data fills in); a pretrained family overrides this with what its weights
        fix. Jobs ask the model (or the model card, which records it) and never assume config fields."""
        return (int(self.config.resolution), int(self.config.resolution), int(self.config.channels))

    @classmethod
    def fixed_output_shape(cls, config: dict[str, Any]) -> tuple[int, int, int] | None:
        """The ``(H, W, C)`` a family's saved weights fix, read from ``config`` without building the model
        (so a config can be checked against the data before any work), or ``None`` when the data decides
        it or it cannot be read yet."""
        return None

    def label_indices(self, labels: Sequence[Any]) -> torch.Tensor | None:
        """Label names -> class indices (None for an unconditional model)."""
        if not self.config.classes:
            return None
        index = {c: i for i, c in enumerate(self.config.classes)}
        unknown = sorted({str(l) for l in labels if str(l) not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the model's classes {self.config.classes}")
        return torch.tensor([index[str(l)] for l in labels], dtype=torch.long)

    def make_batch(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        pixels = torch.tensor(np.asarray(columns["pixels"]))  # [B, H, W, C] uint8 (a copy: Ray hands out read-only arrays)
        expected = self.output_shape
        if tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"image batch has shape {tuple(pixels.shape[1:])}, model expects {expected} (H, W, C)")
        batch = {"images": pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)}
        labels = self.label_indices(list(columns["label"])) if self.config.classes else None
        if labels is not None:
            batch["labels"] = labels
        return batch

    def row_noise(self, seeds: Sequence[int], *shape: int) -> torch.Tensor:
        """``[B, *shape]`` standard normal noise, row ``i`` drawn from ``seeds[i]`` alone (on the CPU)."""
        return self.draw_noise([row_generator(s) for s in seeds], shape)

    def draw_noise(self, gens: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
        """The next ``[B, *shape]`` noise from each row's own generator (drawn on the CPU, so every device
        sees the same numbers), moved to the model's device."""
        return torch.stack([torch.randn(*shape, generator=g) for g in gens]).to(self.device)

    def conditions_tensor(self, conditions: Sequence[str | None], seeds: Sequence[int]) -> torch.Tensor | None:
        if len(conditions) != len(seeds):
            raise ValueError("conditions and seeds must have the same length")
        y = self.label_indices(list(conditions)) if self.config.classes else None
        return None if y is None else y.to(self.device)

    def sampler_defaults(self) -> dict[str, Any]:
        return {"chunk": 16}

    @torch.no_grad()
    def sample(self, conditions: Sequence[str | None], seeds: Sequence[int], **sampler: Any) -> list[np.ndarray]:
        """Rows go through the network in chunks of exactly ``chunk`` rows (the last one padded with copies
        of its first row, whose outputs are dropped). Kernels pick their algorithm by shape, so a batch of 7
        can round differently from a batch of 1; with one fixed shape a row's pixels are the same alone or
        in any batch. ``chunk`` is recorded with every generated row; raise it on a GPU for throughput."""
        self.conditions_tensor(conditions, seeds)  # checks labels and lengths before any work
        settings = {**self.sampler_defaults(), **sampler}
        k = int(settings["chunk"])
        if k < 1:
            raise ValueError(f"chunk must be >= 1, got {k}")
        out: list[np.ndarray] = []
        for i in range(0, len(seeds), k):
            c, s = list(conditions[i:i + k]), [int(x) for x in seeds[i:i + k]]
            n = len(s)
            c, s = c + [c[0]] * (k - n), s + [s[0]] * (k - n)
            y = self.conditions_tensor(c, s)
            out += self.in_eval(lambda: self.sample_chunk(y, s, settings))[:n]
        return out

    def sample_chunk(self, y: torch.Tensor | None, seeds: list[int], settings: dict[str, Any]) -> torch.Tensor:
        """``[k, C, H, W]`` images in ``[-1, 1]`` for class indices ``y`` and one seed per row."""
        raise NotImplementedError

    @staticmethod
    def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
        """``[B, C, H, W]`` floats in ``[-1, 1]`` -> B arrays ``uint8 [H, W, C]``."""
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return list(images.permute(0, 2, 3, 1).cpu().numpy())

    def in_eval(self, fn: Callable[[], torch.Tensor]) -> list[np.ndarray]:
        """Runs ``fn`` (which returns ``[-1, 1]`` images) in eval mode, restoring the mode after, and
        returns uint8 images."""
        was_training = self.training
        self.eval()
        try:
            return self.to_uint8(fn())
        finally:
            self.train(was_training)
