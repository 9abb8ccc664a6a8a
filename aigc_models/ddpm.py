"""A small conditional U-Net diffusion model: DDPM training (Ho et al. 2020), DDIM sampling (Song et al.
2021) and classifier-free guidance (Ho & Salimans 2022).

Training adds Gaussian noise to an image at a random step ``t`` of a ``timesteps``-long schedule (cosine by
default, Nichol & Dhariwal 2021) and teaches the U-Net to predict that noise (mean squared error). A
conditional model also learns the unconditional case: the label is replaced by a "no label" class with
probability ``cond_drop``. Sampling runs DDIM over ``steps`` evenly spaced steps (``eta`` 0: deterministic;
1: DDPM-like noise, drawn from each row's own generator), mixing conditional and unconditional predictions
as ``uncond + guidance * (cond - uncond)``. An exponential moving average of the weights (``ema_decay``)
is what samples, as is usual for diffusion models.

The U-Net: residual blocks with GroupNorm (per-sample, so a row never depends on its batch), the time and
label embedding added inside every block, stride-2 convolutions down, nearest upsampling back, skip
connections between the matching levels, and self-attention at the lowest resolution.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import OptimizerSettings, ema_update, row_generator
from .image import ImageConfig, ImageModel


@dataclasses.dataclass
class DDPMConfig(ImageConfig):
    width: int = 32  # channels of the first U-Net level
    channel_mult: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 2])  # one level each; halves between
    timesteps: int = 1000
    schedule: str = "cosine"  # cosine | linear
    cond_drop: float = 0.1  # share of training rows that see "no label" (for classifier-free guidance)
    ema_decay: float = 0.999
    lr: float = 2e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.channel_mult or self.resolution % 2 ** (len(self.channel_mult) - 1) or self.resolution // 2 ** (len(self.channel_mult) - 1) < 2:
            raise ValueError(f"channel_mult {self.channel_mult} halves resolution {self.resolution} too often")
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', got {self.schedule!r}")
        if self.timesteps < 2 or not 0 <= self.cond_drop < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("need timesteps >= 2, cond_drop in [0, 1) and ema_decay in [0, 1)")


def alpha_bars(timesteps: int, schedule: str) -> torch.Tensor:
    """Cumulative signal share ``alpha_bar[t]`` for ``t = 0 .. timesteps-1`` (float64)."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
        return torch.cumprod(1 - betas, 0)
    s = 0.008
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)  # [B, dim]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Attention(nn.Module):
    def __init__(self, c: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if c % heads == 0 else 1
        self.norm, self.qkv, self.out = nn.GroupNorm(min(8, c), c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        return x + self.out(y.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, cfg: DDPMConfig) -> None:
        super().__init__()
        w, emb_dim = cfg.width, cfg.width * 4
        self.time_mlp = nn.Sequential(nn.Linear(w, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(len(cfg.classes) + 1, emb_dim) if cfg.classes else None  # last: "no label"
        self.conv_in = nn.Conv2d(cfg.channels, w, 3, 1, 1)
        widths = [w * m for m in cfg.channel_mult]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = w
        for i, cw in enumerate(widths):
            self.down.append(ResBlock(c, cw, emb_dim))
            c = cw
            self.downsample.append(nn.Conv2d(c, c, 3, 2, 1) if i < len(widths) - 1 else nn.Identity())
        self.mid1, self.mid_attn, self.mid2 = ResBlock(c, c, emb_dim), Attention(c), ResBlock(c, c, emb_dim)
        self.up = nn.ModuleList()
        for cw in reversed(widths):
            self.up.append(ResBlock(c + cw, cw, emb_dim))
            c = cw
        self.norm_out, self.conv_out = nn.GroupNorm(min(8, c), c), nn.Conv2d(c, cfg.channels, 3, 1, 1)
        self.base_width = w

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_width))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        h, skips = self.conv_in(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, block in enumerate(self.up):
            skip = skips.pop()
            if i:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))  # predicted noise [B, C, R, R]


class DDPM(ImageModel):
    family = "ddpm"
    config_class = DDPMConfig

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__(config)
        self.unet = UNet(config)
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha_bar", alpha_bars(config.timesteps, config.schedule).float(), persistent=False)

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings(lr=self.config.lr, betas=(0.9, 0.999))

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list(self.unet.parameters())

    @torch.no_grad()
    def after_step(self, phase: str) -> None:
        self.ema_steps += 1
        ema_update(self.unet_ema, self.unet, int(self.ema_steps), self.config.ema_decay)

    @property
    def null_label(self) -> int:
        return len(self.config.classes)

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, y = batch["images"], batch.get("labels")
        B = x0.shape[0]
        t = torch.randint(0, self.config.timesteps, (B,), device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alpha_bar[t].view(B, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if y is not None and self.config.cond_drop:
            y = torch.where(torch.rand(B, device=y.device) < self.config.cond_drop, self.null_label, y)
        loss = F.mse_loss(self.unet(xt, t, y).float(), noise.float())
        return loss, {"loss": loss.detach()}

    def sampler_defaults(self) -> dict[str, Any]:
        return {**super().sampler_defaults(), "steps": min(50, self.config.timesteps), "eta": 0.0,
                "guidance": 2.0 if self.config.classes else 1.0}

    def sample_chunk(self, y: torch.Tensor | None, seeds: list[int], s: dict[str, Any]) -> torch.Tensor:
        """DDIM with ``steps`` steps, ``eta`` and ``guidance`` (1: plain conditional; 0: unconditional)."""
        steps, eta, guidance = int(s["steps"]), float(s["eta"]), float(s["guidance"])
        if not 1 <= steps <= self.config.timesteps:
            raise ValueError(f"steps must be in 1..{self.config.timesteps}, got {steps}")
        shape = (self.config.channels, self.config.resolution, self.config.resolution)
        gens = [row_generator(seed) for seed in seeds]
        x = self.draw_noise(gens, shape)
        ts = torch.linspace(self.config.timesteps - 1, 0, steps).round().long().tolist()
        unet = self.unet_ema if self.config.ema_decay > 0 else self.unet

        def eps_at(x: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            if y is None or guidance == 1.0:
                return unet(x, tt, y).float()
            null = torch.full_like(y, self.null_label)
            if guidance == 0.0:
                return unet(x, tt, null).float()
            cond, uncond = unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).float().chunk(2)
            return uncond + guidance * (cond - uncond)

        for i, t in enumerate(ts):
            ab = self.alpha_bar[t]
            ab_prev = self.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=x.device)
            eps = eps_at(x, t)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clamped x0
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and i + 1 < len(ts):
                x = x + sigma * self.draw_noise(gens, shape)
        return x

