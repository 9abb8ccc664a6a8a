"""Choosing rows by a hash of (seed, id), never by row order: the same inputs and seed pick the same rows whatever
the file layout, batch or worker count. Used where a stage takes a subset: mixtures (``jobs.mix``) and the gate's
augmentation lift (``jobs.gate.lift``)."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

_NONE = "\x00none"  # stands for a missing label while counting per label


def row_hash(tag: str, seed: int, ids: Sequence[str]) -> np.ndarray:
    """``uint64`` hash of (tag, seed, id) per id."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{tag}|{seed}|{i}".encode(), digest_size=8).digest(), "big")
                     for i in ids], dtype=np.uint64)


def pick(ids: Sequence[str], seed: int, n: int | Mapping[Any, int], labels: Sequence[Any] | None = None,
         tag: str = "pick") -> np.ndarray:
    """Mask of the ``n`` rows with the smallest hashes of (tag, seed, id), ties broken by id; with a mapping, the
    ``n[label]`` smallest of each label (``labels`` gives each row's; a label the mapping lacks gets none)."""
    mask = np.zeros(len(ids), dtype=bool)
    if not len(ids):
        return mask
    keyed = [_NONE if v is None else v for v in (labels if labels is not None else [None] * len(ids))]
    ranked = pd.DataFrame({"id": list(ids), "label": keyed, "key": row_hash(tag, seed, list(ids))}).sort_values(["key", "id"])
    if isinstance(n, int):
        mask[ranked.index[:n]] = True
        return mask
    quota = {(_NONE if k is None else k): v for k, v in n.items()}
    rank = ranked.groupby("label", sort=False).cumcount().to_numpy()
    mask[ranked.index[rank < ranked["label"].map(quota).fillna(0).to_numpy()]] = True
    return mask
