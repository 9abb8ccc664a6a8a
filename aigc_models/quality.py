"""The measurements behind generation's quality filters, in plain torch and numpy (they run on a GPU box
with torch alone, like the models).

Images:
- ``DomainClassifier``: a small CNN trained on the curated images during ``train``; its softmax probability
  of the *requested* label says whether a conditional image shows what was asked for.
- ``pixel_features`` / ``nearest``: images box-downsampled to at most 16x16, scaled to [0, 1]; the RMS
  distance to the nearest training image flags near-copies (memorisation). Pixel space is crude but
  honest for small images; the threshold is calibrated on held-out real images (see ``jobs.gate.references``).

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
    """``uint8 [B, H, W, C]`` -> ``float [B, C, H, W]`` in [-1, 1], the models' convention. The float copy is made
    in numpy, so pixels from Ray's object store (read-only) never reach ``torch.from_numpy`` (which warns)."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32)).to(device).permute(0, 3, 1, 2).div(127.5).sub(1.0)


def train_classifier(pixels: np.ndarray, labels: np.ndarray, classes: int, epochs: int = 8, batch_size: int = 64,
                     seed: int = 0, device: str = "cpu") -> DomainClassifier:
    """Trains on ``uint8 [N, H, W, C]`` images with integer ``labels``; light shift augmentation keeps it
    from scoring generated images on exact pixel positions."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DomainClassifier(pixels.shape[3], pixels.shape[1], classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x_all, y_all = to_input(pixels), torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())  # own, writable
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


# ---- distribution figures (the nightly quality gate) ---------------------------------------------------

@torch.no_grad()
def classifier_features(model: DomainClassifier, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``[N, 2 * width]``: the last conv block's activations averaged over space (the role Inception's pool3
    plays in FID), in the feature space of the classifier trained on the curated data."""
    device = next(model.parameters()).device
    body = model.net[:5]  # conv, relu, pool, conv, relu
    out = [body(to_input(pixels[i:i + batch_size], device)).float().mean(dim=(2, 3)).cpu()
           for i in range(0, len(pixels), batch_size)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 2 * model.width))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets: |mu_a - mu_b|^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2).
    Tr((Sa Sb)^1/2) is taken from the eigenvalues of Sa^1/2 Sb Sa^1/2 (symmetric, so no complex sqrtm)."""
    x, y = torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64))
    mu = x.mean(0) - y.mean(0)
    sa, sb = torch.cov(x.T), torch.cov(y.T)
    w, v = torch.linalg.eigh(sa)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root @ sb @ root
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float(mu @ mu + sa.trace() + sb.trace() - 2 * cross)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 20, subset_size: int = 200,
                              seed: int = 0) -> float:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over random subsets.
    Unlike FD it is unbiased for small samples, which is what a nightly gate on a few hundred images has."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(len(x), len(y), subset_size)
    if m < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    values = []
    for _ in range(subsets):
        xs, ys = x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((xs @ xs.T) / d + 1) ** 3, ((ys @ ys.T) / d + 1) ** 3, ((xs @ ys.T) / d + 1) ** 3
        off = 1.0 / (m * (m - 1))
        values.append((kxx.sum() - np.trace(kxx)) * off + (kyy.sum() - np.trace(kyy)) * off - 2 * kxy.mean())
    return float(np.mean(values))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 512) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
    reaching each point's k-th nearest neighbour; precision is the share of generated points inside the real
    manifold (fidelity), recall the share of real points inside the generated one (coverage). Distances are
    taken ``chunk`` rows at a time, so memory stays at ``chunk x N`` whatever the set sizes."""
    r, f = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    if len(r) <= k or len(f) <= k:
        return float("nan"), float("nan")

    def radii(x: torch.Tensor) -> torch.Tensor:  # +1: a point is its own nearest neighbour
        return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])

    def covered(q: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor) -> torch.Tensor:
        return torch.cat([(torch.cdist(q[i:i + chunk], ref) <= ref_radii[None, :]).any(dim=1) for i in range(0, len(q), chunk)])

    precision = covered(f, r, radii(r)).double().mean()
    recall = covered(r, f, radii(f)).double().mean()
    return float(precision), float(recall)


def _word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = _normalise(text).split(" ") if text.strip() else []
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams of the whole set (Li et al. 2016): low for a model that keeps
    saying the same things."""
    grams = [g for t in texts for g in _word_ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_similarity(texts: Sequence[str], n: int = 3, max_texts: int = 300) -> float:
    """Mean pairwise Jaccard similarity of the texts' word n-gram sets: near 0 for varied output, near 1
    when every sample is the same text (mode collapse), whatever the prompt."""
    sets = [set(_word_ngrams(t, n)) for t in texts[:max_texts]]
    sims = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:] if a | b]
    return float(np.mean(sims)) if sims else 0.0


@torch.no_grad()
def perplexity(model: nn.Module, texts: Sequence[str], batch_size: int = 16) -> float:
    """Token-weighted perplexity of a text model (``make_batch``/``forward`` of ``aigc_models.text``) on
    held-out documents, in the model's own tokens (compare models with the same tokenizer)."""
    total, count = 0.0, 0
    pad = model.tokenizer.pad
    for i in range(0, len(texts), batch_size):
        batch = {k: v.to(model.device) for k, v in model.make_batch({"text": np.array(texts[i:i + batch_size])}).items()}
        targets = int((batch["tokens"][:, 1:] != pad).sum())
        if targets:
            loss, _ = model.forward("model", batch)
            total, count = total + float(loss) * targets, count + targets
    return float(np.exp(total / count)) if count else float("nan")
