"""A small decoder-only transformer language model (GPT-2 style, after karpathy/nanoGPT) with a KV cache.

Tokens are bytes (UTF-8), plus BOS, EOS and PAD: no vocabulary file, every string encodes, and the model
can be trained on any corpus without a download. Training packs documents as ``BOS doc EOS BOS doc EOS ...``
into windows of ``block_size + 1`` tokens; PAD fills the last window and is ignored by the loss.

Sampling draws each row with its own CPU generator (temperature, top-k, top-p, max new tokens, stop
sequences), so a row's text depends only on its seed, prompt, sampler settings and the weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import GenerativeModel, OptimizerSettings, row_generator

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(tokens: Sequence[int]) -> str:
    """Invalid UTF-8 (a multi-byte character cut in half) decodes to U+FFFD rather than failing."""
    return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


@dataclasses.dataclass
class GPTConfig:
    block_size: int = 128  # context length in tokens (bytes)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # [B, h, T, d]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # [B, h, T_past + T, d]
        # With a cache, the new tokens see every cached token; causality only matters among the new ones.
        if past is None or T > 1:
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

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class GPT(GenerativeModel):
    family = "gpt"
    modality = "text"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.tok_emb = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
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

    def logits(self, idx: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """``idx [B, T]`` -> logits ``[B, T, V]`` and the updated cache (positions continue after it)."""
        start = cache[0][0].shape[2] if cache else 0
        if start + idx.shape[1] > self.config.block_size:
            raise ValueError(f"sequence of {start + idx.shape[1]} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # [B, T, C]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache else None)
            new_cache.append(kv)
        return self.lm_head(self.ln_f(x)), new_cache

    def make_batch(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        stream: list[int] = []
        for doc in columns["text"]:
            stream += [BOS, *encode(str(doc)), EOS]
        window = self.config.block_size + 1
        n = max(1, math.ceil(len(stream) / window))
        stream += [PAD] * (n * window - len(stream))
        return {"tokens": torch.tensor(stream, dtype=torch.long).view(n, window)}  # [N, block_size + 1]

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tokens = batch["tokens"]
        logits, _ = self.logits(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), tokens[:, 1:].reshape(-1), ignore_index=PAD)
        return loss, {"loss": loss.detach()}

    def sampler_defaults(self) -> dict[str, Any]:
        return {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "max_new_tokens": 64, "stop": []}

    @torch.no_grad()
    def sample(self, conditions: Sequence[str | None], seeds: Sequence[int], **sampler: Any) -> list[str]:
        """Returns ``prompt + continuation`` per row; generation ends at EOS, a stop sequence, or the budget."""
        if len(conditions) != len(seeds):
            raise ValueError("conditions and seeds must have the same length")
        settings = {**self.sampler_defaults(), **sampler}
        was_training = self.training
        self.eval()
        try:
            return [self._sample_one(p or "", s, settings) for p, s in zip(conditions, seeds)]
        finally:
            self.train(was_training)

    def _sample_one(self, prompt: str, seed: int, s: dict[str, Any]) -> str:
        gen, device = row_generator(seed), self.device
        prompt_tokens = [BOS, *encode(prompt)][-(self.config.block_size - 1):]
        budget = min(int(s["max_new_tokens"]), self.config.block_size - len(prompt_tokens))
        logits, cache = self.logits(torch.tensor([prompt_tokens], device=device))
        out: list[int] = []
        stops = [str(x) for x in s.get("stop") or []]
        for _ in range(budget):
            nxt = _draw(logits[0, -1].float().cpu(), gen, float(s["temperature"]), int(s["top_k"]), float(s["top_p"]))
            if nxt in (EOS, BOS, PAD):
                break
            out.append(nxt)
            if stops and any(decode(out).endswith(x) for x in stops):
                break
            logits, cache = self.logits(torch.tensor([[nxt]], device=device), cache)
        return prompt + decode(out)


def _draw(logits: torch.Tensor, gen: torch.Generator, temperature: float, top_k: int, top_p: float) -> int:
    """One token from ``logits [V]``; temperature 0 is greedy."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if 0 < top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))
