"""The measurements behind generation's quality filters, in plain torch and numpy (they run on a GPU box
with torch alone, like the models).

Images:
- ``DomainClassifier``: a small CNN trained on the curated images during ``train``; its softmax probability
  of the *requested* label says whether a conditional image shows what was asked for.
- ``pixel_features`` / ``nearest``: images box-downsampled to at most 16x16, scaled to [0, 1]; the RMS
  distance to the nearest training image flags near-copies (memorisation). Pixel space is crude but
  honest for small images; the threshold is calibrated on held-out real images (see ``jobs.quality``).

Texts:
- ``shingles``: hashed character k-grams, mod-sampled (keep a hash when ``h % mod == 0``) so the reference
  of a corpus stays small; ``overlap`` is the share of a text's sampled shingles found in the reference,
  which is high for a verbatim or near copy of a training document.
- ``repetition``: the share of word 3-grams that repeat an earlier one (degenerate loops score near 1).
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import torch
from torch import nn

FEATURE_SIDE = 16  # images are compared at most at 16x16


class DomainClassifier(nn.Module):
    """Two conv blocks and a linear head; small enough to train in seconds on the CPU for 32x32 digits."""

    def __init__(self, channels: int, resolution: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width * 16, classes))
        self.channels, self.resolution, self.classes, self.width = channels, resolution, classes, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def to_input(pixels: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``uint8 [B, H, W, C]`` -> ``float [B, C, H, W]`` in [-1, 1], the models' convention."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_classifier(pixels: np.ndarray, labels: np.ndarray, classes: int, epochs: int = 8, batch_size: int = 64,
                     seed: int = 0, device: str = "cpu") -> DomainClassifier:
    """Trains on ``uint8 [N, H, W, C]`` images with integer ``labels``; light shift augmentation keeps it
    from scoring generated images on exact pixel positions."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DomainClassifier(pixels.shape[3], pixels.shape[1], classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x_all, y_all = to_input(pixels), torch.as_tensor(labels, dtype=torch.long)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = x_all[idx]
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).to(device)
            loss = nn.functional.cross_entropy(model(x), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def class_probabilities(model: DomainClassifier, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``[N, classes]`` softmax probabilities (fp32 math, so CPU and GPU agree to rounding)."""
    device = next(model.parameters()).device
    out = [torch.softmax(model(to_input(pixels[i:i + batch_size], device)).float(), dim=1).cpu()
           for i in range(0, len(pixels), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.classes), dtype=np.float32)


def pixel_features(pixels: np.ndarray) -> np.ndarray:
    """``uint8 [N, H, W, C]`` -> ``float32 [N, D]``: box-downsampled to at most 16x16, in [0, 1]."""
    n, h, w, c = pixels.shape
    f = max(1, h // FEATURE_SIDE)
    x = pixels.reshape(n, h // f, f, w // f, f, c).astype(np.float32).mean(axis=(2, 4)) / 255.0
    return x.reshape(n, -1)


def nearest(queries: np.ndarray, reference: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(RMS distance, index) of each query's nearest reference row, by chunked matrix products."""
    if len(reference) == 0:
        return np.full(len(queries), np.inf, dtype=np.float32), np.full(len(queries), -1, dtype=np.int64)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    qn = (q * q).sum(1, keepdim=True)
    best = torch.full((len(q),), float("inf"))
    arg = torch.full((len(q),), -1, dtype=torch.long)
    for start in range(0, len(reference), chunk):
        r = torch.from_numpy(np.ascontiguousarray(reference[start:start + chunk], dtype=np.float32))
        d2 = (qn + (r * r).sum(1)[None, :] - 2 * q @ r.T).clamp_min(0)
        value, index = d2.min(dim=1)
        better = value < best
        best = torch.where(better, value, best)
        arg = torch.where(better, index + start, arg)
    return (best / queries.shape[1]).sqrt().numpy(), arg.numpy()


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def shingles(text: str, k: int = 24, mod: int = 4) -> np.ndarray:
    """Sorted unique uint64 hashes of the normalised text's k-character windows, keeping 1 in ``mod``."""
    t = _normalise(text).encode()
    if len(t) < k:
        return np.zeros(0, dtype=np.uint64)
    hashes = {int.from_bytes(hashlib.blake2b(t[i:i + k], digest_size=8).digest(), "little") for i in range(len(t) - k + 1)}
    return np.array(sorted(h for h in hashes if h % mod == 0), dtype=np.uint64)


def overlap(text: str, reference: np.ndarray, k: int = 24, mod: int = 4) -> float | None:
    """Share of ``text``'s sampled shingles present in the sorted ``reference``; None when the text is too
    short to have any (nothing to judge)."""
    s = shingles(text, k, mod)
    if len(s) == 0 or len(reference) == 0:  # too short to judge, or nothing to compare with
        return None
    pos = np.searchsorted(reference, s)
    found = (pos < len(reference)) & (reference[np.minimum(pos, len(reference) - 1)] == s)
    return float(found.mean())


def repetition(text: str, n: int = 3) -> float:
    """Share of word n-grams that already occurred earlier in the text (0 for fresh text, near 1 for loops)."""
    words = _normalise(text).split(" ")
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def reference_shingles(texts: Sequence[str], k: int = 24, mod: int = 4) -> np.ndarray:
    parts = [shingles(t, k, mod) for t in texts]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
