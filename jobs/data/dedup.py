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

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import ray

from jobs.data.spec import PreprocessSpec
from jobs.store import schema

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


# ---- keys of the cleaned units, on the driver -------------------------------------------------------

@dataclass
class UnitKeys:
    """Keys of the units that passed cleaning, packed into fixed-size arrays (about 60 bytes a unit, in
    input order), so the driver can deduplicate and version millions of units."""

    ids: np.ndarray  # S20 row ids
    image: np.ndarray  # bool
    content: np.ndarray  # [N, 2] uint64: the first 128 bits of the content hash
    near: np.ndarray  # [N, 2] uint64: the dHash (images, low word) or 128 bits of the text-key hash
    position: np.ndarray  # int64

    @classmethod
    def collect(cls, cleaned: ray.data.Dataset) -> "UnitKeys":
        parts = []
        columns = ["id", "status", "modality", "content_sha256", "near_key", "position"]
        for b in cleaned.select_columns(columns).iter_batches(batch_format="pandas", batch_size=4096):
            b = b[b["status"] == "ok"]
            parts.append((np.array(b["id"].tolist(), dtype="S20"), (b["modality"] == "image").to_numpy(bool),
                          _words(b["content_sha256"]), _words(b["near_key"]), b["position"].to_numpy(np.int64)))
        if not parts:
            return cls(np.zeros(0, "S20"), np.zeros(0, bool), np.zeros((0, 2), np.uint64), np.zeros((0, 2), np.uint64),
                       np.zeros(0, np.int64))
        ids, image, content, near, position = (np.concatenate(a) for a in zip(*parts))
        order = np.lexsort((ids, position))  # input order; ids break ties
        return cls(ids[order], image[order], content[order], near[order], position[order])


def _words(hexes: pd.Series) -> np.ndarray:
    """Hex digests -> [N, 2] uint64 (their first 128 bits; shorter ones are zero-padded on the left)."""
    raw = bytes.fromhex("".join(h[:32].rjust(32, "0") for h in hexes))
    return np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)


def find_duplicates(keys: UnitKeys, spec: PreprocessSpec) -> dict[str, str]:
    """``{id: "duplicate_of=<kept id>[;near...]"}``; the first unit in input order (sources as listed, then
    rows) is the one kept."""
    if not spec.dedup:
        return {}
    ids = keys.ids  # bytes; decoded only for the duplicates found
    later, first = first_of_groups([keys.image, keys.content[:, 0], keys.content[:, 1]])
    found = {ids[a].decode(): f"duplicate_of={ids[b].decode()}" for a, b in zip(later, first)}
    if spec.near_dedup:
        rest = np.ones(len(ids), bool)
        rest[later] = False
        images = np.flatnonzero(rest & keys.image)
        near = near_image_duplicates(ids[images].astype(str).tolist(), keys.near[images, 1].tolist(), spec.near_dedup_bits)
        found.update({rid: f"duplicate_of={orig};near_bits={d}" for rid, (orig, d) in near.items()})
        texts = np.flatnonzero(rest & ~keys.image)
        later, first = first_of_groups([keys.near[texts, 0], keys.near[texts, 1]])
        found.update({ids[texts[a]].decode(): f"duplicate_of={ids[texts[b]].decode()};near_text" for a, b in zip(later, first)})
    return found


def dataset_version(keys: UnitKeys, duplicates: dict[str, str], spec: dict[str, Any]) -> str:
    """Content hash of the accepted units (ids and content hashes, sorted by id) and the settings; the
    split is a function of the id and the settings, so it is covered too."""
    accepted = ~np.isin(keys.ids, np.array(list(duplicates), dtype="S20")) if duplicates else np.ones(len(keys.ids), bool)
    order = np.argsort(keys.ids[accepted], kind="stable")
    fingerprint = hashlib.sha256(json.dumps({"schema": schema.SCHEMA_VERSION, "spec": spec}, sort_keys=True).encode())
    fingerprint.update(np.ascontiguousarray(keys.ids[accepted][order]).tobytes())
    fingerprint.update(np.ascontiguousarray(keys.content[accepted][order]).tobytes())
    return fingerprint.hexdigest()[:12]
