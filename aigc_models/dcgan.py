"""Class-conditional DCGAN (Radford et al. 2015) with a projection discriminator (Miyato & Koyama 2018).

The generator follows the paper: a linear projection to a 4x4 map, then stride-2 transposed convolutions
with BatchNorm and ReLU, tanh out (the projection itself has no BatchNorm: on the digits it cost a fifth of
the within-class diversity). The discriminator uses spectral norm and LeakyReLU, a minibatch standard
deviation feature (Karras et al. 2018) against mode collapse, and conditions by projection:
``D(x, y) = psi(h) + <embed(y), h>`` with ``h`` the pooled features. The hinge loss is the default;
``loss: nonsaturating`` gives the original DCGAN objective (it collapsed to one sample per class in our
runs on the digits). Sampling uses an exponential moving average of the generator's weights
(``ema_decay``; Yazici et al. 2019), which smooths out the oscillation of adversarial training.

Images are ``[-1, 1]`` floats inside the model and ``uint8 [H, W, C]`` outside.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .base import OptimizerSettings, ema_update
from .image import ImageConfig, ImageModel


@dataclasses.dataclass
class DCGANConfig(ImageConfig):
    z_dim: int = 64
    g_width: int = 64  # channels of the last generator stage; doubles towards the 4x4 map
    d_width: int = 64
    loss: str = "hinge"  # hinge | nonsaturating
    minibatch_std: bool = True  # discriminator sees the batch's feature spread; counters mode collapse
    spectral_norm: bool = True  # spectral normalisation of the discriminator's layers (Miyato et al. 2018)
    ema_decay: float = 0.999  # EMA of the generator used for sampling; 0 samples the raw generator
    lr_g: float = 2e-4
    lr_d: float = 2e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("hinge", "nonsaturating"):
            raise ValueError(f"loss must be 'hinge' or 'nonsaturating', got {self.loss!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        n_up = int(math.log2(cfg.resolution)) - 2
        width = cfg.g_width * 2 ** (n_up - 1)
        self.embed = nn.Embedding(len(cfg.classes), cfg.z_dim) if cfg.classes else None
        in_dim = cfg.z_dim * (2 if cfg.classes else 1)
        self.project = nn.Sequential(nn.Linear(in_dim, width * 16), nn.ReLU(True))
        self.start_width = width
        blocks: list[nn.Module] = []
        for _ in range(n_up - 1):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        blocks += [nn.ConvTranspose2d(width, cfg.channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)  # [B, 2*z_dim]
        h = self.project(z).view(z.shape[0], self.start_width, 4, 4)  # [B, W, 4, 4]
        return self.blocks(h)  # [B, C, R, R]


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        n_down = int(math.log2(cfg.resolution)) - 2
        sn = spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, width = cfg.channels, cfg.d_width
        for _ in range(n_down):
            layers += [sn(nn.Conv2d(c_in, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            c_in, width = width, width * 2
        self.features = nn.Sequential(*layers)
        self.minibatch_std = cfg.minibatch_std
        self.head = nn.Sequential(sn(nn.Conv2d(c_in + int(cfg.minibatch_std), c_in, 3, 1, 1)), nn.LeakyReLU(0.2, True))
        self.out = sn(nn.Linear(c_in, 1))
        self.embed = sn(nn.Embedding(len(cfg.classes), c_in)) if cfg.classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        f = self.features(x)  # [B, F, 4, 4]
        if self.minibatch_std:
            spread = (f.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()  # 0 for a batch of one
            f = torch.cat([f, spread.expand(f.shape[0], 1, *f.shape[2:])], dim=1)  # [B, F + 1, 4, 4]
        h = self.head(f).sum(dim=(2, 3))  # [B, F]
        logit = self.out(h).squeeze(1)  # [B]
        if self.embed is not None:
            logit = logit + (self.embed(y) * h).sum(dim=1)
        return logit


class DCGAN(ImageModel):
    family = "dcgan"
    config_class = DCGANConfig
    phases = ("discriminator", "generator")
    loss_metrics = ("loss_d", "loss_g")

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.apply(_dcgan_init)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def after_step(self, phase: str) -> None:
        if phase != "generator":
            return
        self.ema_steps += 1
        ema_update(self.generator_ema, self.generator, int(self.ema_steps), self.config.ema_decay)

    @property
    def sampling_generator(self) -> Generator:
        return self.generator_ema if self.config.ema_decay > 0 else self.generator

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list((self.discriminator if phase == "discriminator" else self.generator).parameters())

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        lr = self.config.lr_d if phase == "discriminator" else self.config.lr_g
        return OptimizerSettings(lr=lr, betas=(0.0, 0.9) if self.config.loss == "hinge" else (0.5, 0.999))

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real, y = batch["images"], batch.get("labels")
        z = torch.randn(real.shape[0], self.config.z_dim, device=real.device)
        hinge = self.config.loss == "hinge"
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.generator(z, y)
            d_real, d_fake = self.discriminator(real, y), self.discriminator(fake, y)
            if hinge:
                loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:
                loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            return loss, {"loss_d": loss.detach(), "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        d_fake = self.discriminator(self.generator(z, y), y)
        loss = -d_fake.mean() if hinge else F.softplus(-d_fake).mean()
        return loss, {"loss_g": loss.detach()}

    def sample_chunk(self, y: torch.Tensor | None, seeds: list[int], settings: dict[str, Any]) -> torch.Tensor:
        return self.sampling_generator(self.row_noise(seeds, self.config.z_dim).to(self.device), y)


def _dcgan_init(m: nn.Module) -> None:
    """The paper's init: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not hasattr(m, "parametrizations"):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
