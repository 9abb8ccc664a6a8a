"""Save and load models as one self-describing safetensors file: weights plus family and config in its
metadata. Never pickle: ``load`` reads tensors and JSON only, and refuses unknown keys or wrong shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from .base import GenerativeModel

FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A file that is not a loadable model of a known family."""


def save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with a canonical header: safetensors writes the metadata map in a
    random order on every call, so the same weights gave a different file (and ``checkpoint_sha256``) each
    time. Here the header's keys are sorted, so equal tensors and metadata give equal bytes."""
    blob = save_bytes(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data keeps its 8-byte alignment; offsets are relative to it
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + blob[8 + n:])


def build(family: str, config: dict[str, Any] | Any) -> GenerativeModel:
    from . import FAMILIES

    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    cls = FAMILIES[family]
    if isinstance(config, dict):
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise CheckpointError(f"unknown {family} config keys: {unknown}")
        config = cls.config_class(**config)
    return cls(config)


def save(model: GenerativeModel, path: str | Path, extra: dict[str, str] | None = None) -> str:
    """Writes ``path`` (a ``.safetensors`` file) and returns its sha256. ``extra`` lands in the metadata."""
    state, aliases, seen = {}, {}, {}
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if v.numel() and key in seen:  # tied weights (an LM head sharing the embedding): stored once
            aliases[k] = seen[key]
            continue
        seen[key] = k
        state[k] = v.detach().cpu().contiguous()
    metadata = {
        "format": "pt",
        "aigc_format_version": FORMAT_VERSION,
        "family": model.family,
        "config": json.dumps(dataclasses.asdict(model.config)),
        **({"aliases": json.dumps(aliases)} if aliases else {}),
        **(extra or {}),
    }
    save_file(state, str(path), metadata=metadata)
    return sha256_file(path)


def load(path: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for anything that is not its format
        raise CheckpointError(f"{path} is not a safetensors model file: {exc}") from exc
    if "family" not in metadata or "config" not in metadata:
        raise CheckpointError(f"{path} has no family/config metadata; it was not written by aigc_models.save")
    model = build(metadata["family"], json.loads(metadata["config"]))
    for alias, stored in json.loads(metadata.get("aliases", "{}")).items():
        if stored not in state:
            raise CheckpointError(f"{path}: tied weight {alias} points at missing key {stored}")
        state[alias] = state[stored]
    expected = model.state_dict()
    for key in model.optional_state:  # a file older than the key: the initial value, as the model then behaved
        if key in expected and key not in state:
            state[key] = expected[key]
    unknown, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    if unknown or missing:
        raise CheckpointError(f"{path}: unknown keys {unknown[:5]}, missing keys {missing[:5]}")
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch: {bad[:3]}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- training state (optimisers, schedules, RNG states, progress samples) -------------------------------

def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A nested structure -> JSON with tensors replaced by ``{"t": name}`` (stored apart in safetensors).
    Dicts and sequences are tagged, so integer keys (optimiser states) and tuples come back as they were."""
    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = obj.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"t": name}
    if isinstance(obj, dict):
        return {"d": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"l" if isinstance(obj, list) else "u": [_encode(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state (tensors, numbers, strings, lists, dicts)")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    (tag, value), = node.items()
    if tag == "t":
        return tensors[value]
    if tag == "d":
        return {k: _decode(v, tensors) for k, v in value}
    if tag in ("l", "u"):
        items = [_decode(v, tensors) for v in value]
        return items if tag == "l" else tuple(items)
    if tag == "v":
        return value
    raise CheckpointError(f"unknown node {tag!r} in a training state")


def save_state(tree: Any, path: str | Path) -> None:
    """Writes a training state (optimiser and scheduler state dicts, RNG states, counters, sample tensors) as
    safetensors + a JSON skeleton in its metadata: resuming never unpickles anything."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(tree, tensors))
    save_file(tensors, str(path), metadata={"format": "pt", "aigc_state": skeleton})


def load_state(path: str | Path) -> Any:
    """Reads what ``save_state`` wrote; anything else (a pickle, a truncated file) is a ``CheckpointError``."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a safetensors training state: {exc}") from exc
    if "aigc_state" not in metadata:
        raise CheckpointError(f"{path} has no training-state skeleton; it was not written by save_state")
    return _decode(json.loads(metadata["aigc_state"]), tensors)
