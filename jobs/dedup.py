"""Duplicate detection on the driver over compact keys (ids and hashes as fixed-size arrays, about 60
bytes per unit), never over the data itself.

Exact duplicates share a content hash. Near duplicates:
- images: 64-bit difference hashes (dHash) within ``max_bits`` Hamming distance, found with banded lookup
  (split the hash into ``max_bits + 1`` bands: two hashes that close agree exactly on at least one band,
  by the pigeonhole principle), so the work grows with the input, not its square;
- texts: the same normalised form (case-folded, punctuation and whitespace removed).

In every case the first unit in input order is kept and the later ones point at it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Sequence

import numpy as np

PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def dhash(gray: np.ndarray) -> int:
    """Difference hash of an image ``[H, W]`` or ``[H, W, C]`` (uint8): 64 bits, robust to re-encoding
    and small resizes."""
    from PIL import Image

    if gray.ndim == 3:
        gray = gray.mean(axis=2).astype(np.uint8)
    small = np.asarray(Image.fromarray(gray).resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def text_key(text: str) -> str:
    return PUNCT.sub("", unicodedata.normalize("NFKC", text).casefold())


def near_image_duplicates(ids: Sequence[str], hashes: Sequence[int], max_bits: int) -> dict[str, tuple[str, int]]:
    """``{later_id: (kept_id, distance)}`` for images within ``max_bits`` of an earlier kept one."""
    bands = max_bits + 1
    edges = [int(e) for e in np.linspace(0, 64, bands + 1)]
    masks = [((1 << (hi - lo)) - 1) << lo for lo, hi in zip(edges[:-1], edges[1:])]
    index: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(bands)]
    kept: list[tuple[str, int]] = []
    found: dict[str, tuple[str, int]] = {}
    for rid, h in zip(ids, hashes):
        best = None
        for b, mask in enumerate(masks):
            for k in index[b].get(h & mask, ()):
                d = bin(kept[k][1] ^ h).count("1")
                if d <= max_bits and (best is None or k < best[0]):
                    best = (k, d)
        if best is not None:
            found[rid] = (kept[best[0]][0], best[1])
            continue
        for b, mask in enumerate(masks):
            index[b][h & mask].append(len(kept))
        kept.append((rid, h))
    return found


def first_of_groups(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows (in input order) that share every key column with an earlier row: ``(later, first)`` index
    arrays, ``first[i]`` being the earliest row of ``later[i]``'s group. Vectorised (a stable sort), so
    millions of keys take seconds."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort(tuple(reversed(keys)))  # stable: equal keys keep input order
    same = np.zeros(n, bool)
    same[1:] = np.logical_and.reduce([k[order][1:] == k[order][:-1] for k in keys])
    start = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
    return order[same], order[start[same]]
