"""What every text family shares: the tokenizer, training batches, and seeded sampling.

By default tokens are bytes (UTF-8), plus BOS, EOS and PAD: no vocabulary file, every string encodes, and a
model can be trained on any corpus without a download. ``tokenizer: bpe`` trains a byte-level BPE
(``tokenizers`` library) on the training texts instead: shorter sequences, so more text per context; the
trained tokenizer travels inside the model's config (and so inside its checkpoint). Training packs documents as ``BOS doc EOS BOS doc EOS ...``
into windows of ``context + 1`` tokens; PAD fills the last window and is ignored by the loss.

Sampling draws each row with its own CPU generator (temperature, top-k, top-p, max new tokens, stop
sequences; ``cache: false`` recomputes the whole sequence at every step), one row at a time, so a row's text depends only on its seed, prompt, sampler settings and the
weights, never on the batch it came in. ``heal: true`` (the default) heals the prompt's last token (token healing, as
in Microsoft's guidance): a BPE learns " word" with its leading space as one token, so a prompt ending in a space
("The ") leaves the model only word *pieces* to continue with ("The ses the ..."); healing drops that last token and
lets the first new token be any token that starts with its text. Rows recorded before the setting existed have no
``heal`` key and sample as they did (``LEGACY_SAMPLER``). A family provides ``logits(tokens, state)``: the next-token logits
for ``tokens [B, T]`` continuing from ``state`` (a KV cache, an RNN state) and the new state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import GenerativeModel, row_generator

BOS, EOS, PAD = 256, 257, 258  # the byte tokenizer's special tokens
VOCAB_SIZE = 259
SPECIALS = ["<bos>", "<eos>", "<pad>"]
SAMPLER_DEFAULTS: dict[str, Any] = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "max_new_tokens": 64, "stop": [],
                                    "batched": False, "heal": True, "repetition_penalty": 1.0}
LEGACY_SAMPLER = {"heal": False}  # settings added later, as rows recorded without them were sampled
DEFAULT_PROMPTS = ("The ", "A ", "In ")  # what a text model is sampled with when nobody asked for a prompt:
#   its registry samples, per-epoch samples and a candidate's evaluation


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(tokens: Sequence[int]) -> str:
    """Invalid UTF-8 (a multi-byte character cut in half) decodes to U+FFFD rather than failing."""
    return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


@dataclasses.dataclass
class TextConfig:
    tokenizer: str = "bytes"  # bytes | bpe (byte-level BPE trained on the training texts)
    vocab_size: int = 1024  # bpe only: merges + 256 bytes + 3 special tokens
    tokenizer_json: str = ""  # bpe only: the trained tokenizer (filled in from the data before training)
    sampler: dict[str, Any] = dataclasses.field(default_factory=dict)  # this model's own sampler defaults

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sampler) - set(SAMPLER_DEFAULTS))
        if unknown:
            raise ValueError(f"sampler: unknown setting(s) {', '.join(unknown)} (known: {', '.join(SAMPLER_DEFAULTS)})")
        if self.tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {self.tokenizer!r}")
        if self.tokenizer == "bpe" and self.vocab_size < 260:
            raise ValueError(f"vocab_size must be >= 260 for bpe (256 bytes + specials), got {self.vocab_size}")


class ByteTokenizer:
    bos, eos, pad, vocab_size = BOS, EOS, PAD, VOCAB_SIZE
    encode = staticmethod(encode)
    decode = staticmethod(decode)


class BPETokenizer:
    """Byte-level BPE from the ``tokenizers`` library: every string encodes (unknown characters fall back
    to their bytes), and decode(encode(s)) == s."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self.bos, self.eos, self.pad = (self._tok.token_to_id(t) for t in SPECIALS)
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: Sequence[int]) -> str:
        return self._tok.decode([t for t in tokens if t not in (self.bos, self.eos, self.pad)])


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """Trains a byte-level BPE on ``texts`` (any iterable, streamed) and returns it as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()


def make_tokenizer(config: TextConfig) -> ByteTokenizer | BPETokenizer:
    if config.tokenizer == "bytes":
        return ByteTokenizer()
    if not config.tokenizer_json:
        raise ValueError("tokenizer 'bpe' needs tokenizer_json: train it with aigc_models.text.train_bpe "
                         "(the training job does this from the curated texts)")
    return BPETokenizer(config.tokenizer_json)


class TextModel(GenerativeModel):
    modality = "text"

    def __init__(self, config: TextConfig) -> None:
        super().__init__(config)
        self.tokenizer = make_tokenizer(config)

    @property
    def context(self) -> int:
        """Tokens per training window; for attention models also the most tokens a sequence may hold."""
        raise NotImplementedError

    max_context: int | None = None  # a hard limit on prompt + continuation (None: no limit)

    def logits(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def make_batch(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        stream: list[int] = []
        for doc in columns["text"]:
            stream += [self.tokenizer.bos, *self.tokenizer.encode(str(doc)), self.tokenizer.eos]
        window = self.context + 1
        n = max(1, math.ceil(len(stream) / window))
        stream += [self.tokenizer.pad] * (n * window - len(stream))
        return {"tokens": torch.tensor(stream, dtype=torch.long).view(n, window)}  # [N, context + 1]

    def forward(self, phase: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tokens = batch["tokens"]
        logits, _ = self.logits(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1),
                               ignore_index=self.tokenizer.pad)
        return loss, {"loss": loss.detach()}

    def sampler_defaults(self) -> dict[str, Any]:
        """The family's defaults under the model's own (``sampler`` in its config: what its candidate evaluation
        samples with, and what every request starts from)."""
        return {**SAMPLER_DEFAULTS, **getattr(self.config, "sampler", {})}

    def prefill(self, rows: list[list[int]]) -> tuple[torch.Tensor, Any]:
        """Prompts (token lists of any lengths) -> next-token logits ``[B, V]`` and a batched state."""
        raise NotImplementedError

    def decode_step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One new token per row ``[B]`` -> next-token logits ``[B, V]`` and the state after it."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, conditions: Sequence[str | None], seeds: Sequence[int], **sampler: Any) -> list[str]:
        """Returns ``prompt + continuation`` per row; generation ends at EOS, a stop sequence, or the budget.

        ``batched: true`` decodes all rows together (prompts left-padded): many times faster on a GPU, but a
        row's numbers then go through batch-shaped kernels, so its text may differ in rare near-ties from
        the same row sampled in another batch. The default samples each row alone and is exactly
        batch-invariant."""
        if len(conditions) != len(seeds):
            raise ValueError("conditions and seeds must have the same length")
        settings = {**self.sampler_defaults(), **sampler}
        was_training = self.training
        self.eval()
        try:
            if settings.get("batched") and len(seeds) > 1:
                return self._sample_batch([p or "" for p in conditions], list(seeds), settings)
            return [self._sample_one(p or "", s, settings) for p, s in zip(conditions, seeds)]
        finally:
            self.train(was_training)

    def _prompt(self, prompt: str, s: dict[str, Any]) -> tuple[list[int], int, str, torch.Tensor | None]:
        """The prompt's tokens (cut to the context from the left), the row's token budget, and with ``heal`` the
        text of the dropped last token and the mask of the tokens the first new one may be."""
        tokens, budget = self.tokenizer.encode(prompt), int(s["max_new_tokens"])
        healed, allowed = "", None
        if s.get("heal") and tokens:
            healed = self.tokenizer.decode(tokens[-1:])
            if prompt.endswith(healed):
                allowed = self._starting_with(healed)
                tokens, budget = tokens[:-1], budget + 1  # the healed token is given back to the budget
            else:  # a token that does not decode alone (part of a character): leave the prompt as it is
                healed = ""
        tokens = [self.tokenizer.bos, *tokens]
        if self.max_context:
            tokens = tokens[-(self.max_context - 1):]
            budget = min(budget, self.max_context - len(tokens))
        return tokens, budget, healed, allowed

    def _starting_with(self, text: str) -> torch.Tensor:
        """``[V]`` bool: the tokens whose text starts with ``text`` (computed once per text)."""
        cache = self.__dict__.setdefault("_heal_cache", {})
        if text not in cache:
            specials = (self.tokenizer.bos, self.tokenizer.eos, self.tokenizer.pad)
            cache[text] = torch.tensor([t not in specials and self.tokenizer.decode([t]).startswith(text)
                                        for t in range(self.tokenizer.vocab_size)])
        return cache[text]

    def _sample_batch(self, prompts: list[str], seeds: list[int], s: dict[str, Any]) -> list[str]:
        gens = [row_generator(seed) for seed in seeds]
        rows, budgets, healed, allowed = zip(*(self._prompt(p, s) for p in prompts))
        stops = [str(x) for x in s.get("stop") or []]
        outs: list[list[int]] = [[] for _ in prompts]
        active = [b > 0 for b in budgets]
        logits, state = self.prefill(list(rows))
        while any(active):
            probs_rows = logits.float().cpu()
            nxt = [self.tokenizer.pad] * len(prompts)
            for i in range(len(prompts)):
                if not active[i]:
                    continue
                row = probs_rows[i] if outs[i] or allowed[i] is None else _only(probs_rows[i], allowed[i])
                row = _penalise(row, outs[i], float(s.get("repetition_penalty", 1.0)))
                tok = draw(row, gens[i], float(s["temperature"]), int(s["top_k"]), float(s["top_p"]))
                if tok in (self.tokenizer.eos, self.tokenizer.bos, self.tokenizer.pad):
                    active[i] = False
                    continue
                outs[i].append(tok)
                nxt[i] = tok
                if len(outs[i]) >= budgets[i] or (stops and any(self.tokenizer.decode(outs[i]).endswith(x) for x in stops)):
                    active[i] = False
            if not any(active):
                break
            logits, state = self.decode_step(torch.tensor(nxt, device=self.device), state)
        return [_join(p, h, self.tokenizer.decode(o)) for p, h, o in zip(prompts, healed, outs)]

    def _sample_one(self, prompt: str, seed: int, s: dict[str, Any]) -> str:
        gen, device = row_generator(seed), self.device
        prompt_tokens, budget, healed, allowed = self._prompt(prompt, s)
        cache = bool(s.get("cache", True))
        logits, state = self.logits(torch.tensor([prompt_tokens], device=device))
        out: list[int] = []
        stops = [str(x) for x in s.get("stop") or []]
        for _ in range(budget):
            last = logits[0, -1].float().cpu()
            last = last if out or allowed is None else _only(last, allowed)
            last = _penalise(last, out, float(s.get("repetition_penalty", 1.0)))
            nxt = draw(last, gen, float(s["temperature"]), int(s["top_k"]), float(s["top_p"]))
            if nxt in (self.tokenizer.eos, self.tokenizer.bos, self.tokenizer.pad):
                break
            out.append(nxt)
            if stops and any(self.tokenizer.decode(out).endswith(x) for x in stops):
                break
            if cache:  # feed the new token only, continuing from the cached state
                logits, state = self.logits(torch.tensor([[nxt]], device=device), state)
            else:  # recompute the whole sequence (for checking the cache, and measuring what it saves)
                logits, _ = self.logits(torch.tensor([prompt_tokens + out], device=device))
        return _join(prompt, healed, self.tokenizer.decode(out))


def _only(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``logits`` with every token outside ``allowed`` (the tokenizer's vocabulary; a model's output layer can be
    padded past it, as many pretrained ones are) at -inf."""
    mask = torch.zeros(logits.numel(), dtype=torch.bool)
    n = min(len(allowed), logits.numel())
    mask[:n] = allowed[:n]
    return logits.masked_fill(~mask, float("-inf"))


def _penalise(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """The repetition penalty of Keskar et al. (2019), over the tokens this row has generated: their logits are
    divided by ``penalty`` when positive and multiplied when negative (1.0: off). Per row, so a row's text still
    depends on its own seed alone."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)))
    picked = logits[idx]
    return logits.index_copy(0, idx, torch.where(picked > 0, picked / penalty, picked * penalty))


def _join(prompt: str, healed: str, new: str) -> str:
    """``prompt + continuation``: with a healed prompt the new text starts with the healed token's text (unless
    generation ended before a first token), which is the prompt's own end."""
    if healed and new.startswith(healed):
        new = new[len(healed):]
    return prompt + new


def draw(logits: torch.Tensor, gen: torch.Generator, temperature: float, top_k: int, top_p: float) -> int:
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
