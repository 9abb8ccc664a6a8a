"""An LSTM character (byte) language model (after Karpathy's char-rnn): the small, fast baseline.

Byte embedding, a stack of LSTM layers, a linear read-out. Byte-level tokens, training windows and seeded
sampling come from ``text.TextModel``; the LSTM state plays the part of the KV cache, so sampling feeds
one new token per step and a sequence has no length limit (``seq_len`` is only the training window).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .base import OptimizerSettings
from .text import TextConfig, TextModel


@dataclasses.dataclass
class CharRNNConfig(TextConfig):
    seq_len: int = 128  # tokens per training window (truncated backpropagation through time)
    embed_dim: int = 64
    hidden: int = 256
    n_layer: int = 2
    dropout: float = 0.0
    lr: float = 2e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.seq_len, self.embed_dim, self.hidden, self.n_layer) < 1:
            raise ValueError("seq_len, embed_dim, hidden and n_layer must be >= 1")


class CharRNN(TextModel):
    family = "char_rnn"
    config_class = CharRNNConfig

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(self.tokenizer.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden, config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.head = nn.Linear(config.hidden, self.tokenizer.vocab_size)

    @property
    def context(self) -> int:
        return self.config.seq_len

    def optimizer_settings(self, phase: str) -> OptimizerSettings:
        return OptimizerSettings(lr=self.config.lr, betas=(0.9, 0.999))

    def logits(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """``tokens [B, T]`` -> logits ``[B, T, V]`` and the LSTM state ``(h, c)`` after them."""
        out, state = self.lstm(self.embed(tokens), state)
        return self.head(out), state

    def prefill(self, rows: list[list[int]]) -> tuple[torch.Tensor, Any]:
        """Each prompt alone (an LSTM cannot skip left padding), then the states side by side."""
        outs = [self.logits(torch.tensor([r], device=self.device)) for r in rows]
        h = torch.cat([st[0] for _, st in outs], dim=1)  # [layers, B, hidden]
        c = torch.cat([st[1] for _, st in outs], dim=1)
        return torch.cat([lg[:, -1] for lg, _ in outs]), (h, c)

    def decode_step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = self.logits(tokens[:, None], state)
        return logits[:, -1], state
