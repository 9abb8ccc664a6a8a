"""The one interface every model family implements.

Jobs (training loops, batch generation) talk to models only through this class, so adding a family never
adds an ``if family == ...`` anywhere else. A family is a ``GenerativeModel`` subclass plus a config
dataclass; ``aigc_models.FAMILIES`` maps the family name to the class.

The contract in short:
- ``phases`` names the optimisers in the order one training step updates them (GANs have two);
  ``loss_metrics`` names the metrics a loss curve shows.
- ``forward(phase, batch)`` returns ``(loss, metrics)`` for that phase. Putting the loss in ``forward`` keeps
  the model DistributedDataParallel-friendly: DDP synchronises gradients of what ``forward`` computes.
- ``after_step(phase)`` runs after each optimiser step (EMA weights live there).
- ``fits_data`` families also fit something to the training data once the optimiser is done (the VAE's latent
  distribution per class): ``fit_statistics(batch)`` returns sums over one batch, which the trainer adds up over
  every batch and worker and hands to ``fit(sums)`` before the final checkpoint (``aigc_models.training.fit_to_data``).
- ``make_batch(columns)`` turns numpy columns (as Ray Data yields them) into tensors for ``forward``.
- ``sample(conditions, seeds, **sampler)`` makes one output per row. Row ``i`` depends only on
  ``seeds[i]``, ``conditions[i]``, the sampler settings and the weights: never on the other rows.
- ``pretrained`` families load their weights (and so their architecture, image shape and class indices)
  from a local directory: the data must fit them, and they can be used as they are, without training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass
class OptimizerSettings:
    """Adam settings for one phase; families choose defaults that train stably."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0


class GenerativeModel(nn.Module):
    family: ClassVar[str]
    modality: ClassVar[str]  # "image" or "text"
    config_class: ClassVar[type]
    phases: ClassVar[tuple[str, ...]] = ("model",)
    loss_metrics: ClassVar[tuple[str, ...]] = ("loss",)  # metrics of ``forward`` a loss curve plots (and their
    #   ``val_`` twins): the family says which of its metrics are losses
    pretrained: ClassVar[bool] = False  # weights come from a saved model, not from a random initialisation
    fits_data: ClassVar[bool] = False  # a pass over the training data after the last step fits state (``fit``)
    optional_state: ClassVar[tuple[str, ...]] = ()  # state keys a file written before they existed may lack: such a
    #   file loads with their initial values (a VAE saved before its fitted prior samples from N(0, I), as it did)

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    # --- training -----------------------------------------------------------------------------
    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters the optimiser of ``phase`` updates."""
        return list(self.parameters())

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings()

    def after_step(self, phase: str) -> None:
        """Called on every worker after the optimiser of ``phase`` stepped; families keep EMA weights here."""

    def make_batch(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def fit_statistics(self, batch: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Sums over one training batch of what ``fit`` needs (``fits_data`` families): sums, so that batches and
        workers add up to the statistics of the whole split, whatever the sharding. ``None``: the zeros (the start
        of the sum, and all a worker with an empty shard contributes)."""
        return {}

    def fit(self, sums: dict[str, torch.Tensor]) -> None:
        """Sets the fitted state from the statistics of the whole training split."""

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    # --- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, conditions: Sequence[str | None], seeds: Sequence[int], **sampler: Any) -> list[Any]:
        """Images come back as ``uint8`` arrays ``[H, W, C]`` in ``[0, 255]``; texts as ``str``."""
        raise NotImplementedError

    def sampler_defaults(self) -> dict[str, Any]:
        """Sampler settings used when a request names none; recorded with every generated row."""
        return {}

    # --- bookkeeping --------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def row_generator(seed: int) -> torch.Generator:
    """A CPU generator for one row. Noise is drawn on the CPU and then moved, so a seed gives the same
    noise on every device type and every batch layout."""
    return torch.Generator(device="cpu").manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


@torch.no_grad()
def ema_update(ema: nn.Module, live: nn.Module, steps: int, decay: float) -> None:
    """Moves ``ema``'s weights towards ``live``'s (buffers are copied). The decay ramps up as
    ``(1 + n) / (10 + n)`` until it reaches ``decay``: a short memory early, when the weights move fast."""
    d = min(decay, (1 + steps) / (10 + steps))
    for e, w in zip(ema.parameters(), live.parameters()):
        e.lerp_(w, 1 - d)
    for e, w in zip(ema.buffers(), live.buffers()):
        e.copy_(w)
