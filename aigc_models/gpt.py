"""A small decoder-only transformer language model (GPT-2 style, after karpathy/nanoGPT) with a KV cache.

Byte-level tokens, training windows and seeded sampling come from ``text.TextModel``; this file is the
transformer: learned positions, pre-LayerNorm blocks, causal scaled-dot-product attention, and a KV cache
so sampling feeds one new token per step. A sequence holds at most ``block_size`` tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import OptimizerSettings
from .text import TextConfig, TextModel


@dataclasses.dataclass
class GPTConfig(TextConfig):
    block_size: int = 128  # context length in tokens
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
                pad_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # [B, h, T, d]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # [B, h, T_past + T, d]
        if pad_mask is not None:  # left-padded rows: [B, 1, T, T_all]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask)
        # With a cache, the new tokens see every cached token; causality only matters among the new ones.
        elif past is None or T > 1:
            t_all = k.shape[2]
            mask = torch.ones(T, t_all, dtype=torch.bool, device=x.device).tril(diagonal=t_all - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
                pad_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln1(x), past, pad_mask)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class GPT(TextModel):
    family = "gpt"
    config_class = GPTConfig

    @property
    def context(self) -> int:
        return self.config.block_size

    @property
    def max_context(self) -> int:  # type: ignore[override]
        return self.config.block_size

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.tok_emb = nn.Embedding(self.tokenizer.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, self.tokenizer.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings(lr=self.config.lr, betas=(0.9, 0.95), weight_decay=self.config.weight_decay)

    def logits(self, idx: torch.Tensor, cache: KVCache | None = None,
               pad: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """``idx [B, T]`` -> logits ``[B, T, V]`` and the updated cache (positions continue after it).

        ``pad [B]``: how many slots at the left of each row (cache included) are padding. Those slots are
        masked out and each row's positions start at its first real token, so a left-padded row computes
        what it would alone (up to floating-point rounding)."""
        start = cache[0][0].shape[2] if cache else 0
        T = idx.shape[1]
        if pad is None:
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
            pos = torch.arange(start, start + T, device=idx.device)
            mask = None
        else:
            slots = torch.arange(start + T, device=idx.device)
            pos = (slots[start:][None] - pad[:, None]).clamp(0, self.config.block_size - 1)  # [B, T]
            causal = slots[None, :] <= slots[start:, None]  # [T, T_all]
            real_key = slots[None, :] >= pad[:, None]  # [B, T_all]
            # a padding slot attends to itself only, so nothing is ever all-masked (no NaN in the cache)
            mask = (causal[None] & real_key[:, None]) | (slots[None, :] == slots[start:, None])[None]
            mask = mask[:, None]  # [B, 1, T, T_all]
        x = self.tok_emb(idx) + self.pos_emb(pos)  # [B, T, C]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache else None, mask)
            new_cache.append(kv)
        return self.lm_head(self.ln_f(x)), new_cache

    def prefill(self, rows: list[list[int]]) -> tuple[torch.Tensor, Any]:
        width = max(len(r) for r in rows)
        pad = torch.tensor([width - len(r) for r in rows], device=self.device)
        idx = torch.tensor([[self.tokenizer.pad] * (width - len(r)) + r for r in rows], device=self.device)  # left padding
        logits, cache = self.logits(idx, None, pad)
        return logits[:, -1], (cache, pad)

    def decode_step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        cache, pad = state
        logits, cache = self.logits(tokens[:, None], cache, pad)
        return logits[:, -1], (cache, pad)
