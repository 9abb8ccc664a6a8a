"""The model registry: ``ROOT/models/<name>/<version>/`` and the ``production.json`` pointer.

A version folder is written in staging and published whole: ``model.safetensors`` (self-describing:
family and config in its metadata), ``model_card.json``, ``metrics.parquet`` and ``samples.png`` (image
models) or ``samples.txt`` (text models). Generation uses the version ``production.json`` points to.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import aigc_models

from .publish import discard, publish, staging_dir
from .storage import Store


@dataclasses.dataclass
class ModelRef:
    name: str
    version: str
    path: str  # store path of the version folder
    card: dict[str, Any]

    @property
    def weights(self) -> str:
        return f"{self.path}/model.safetensors"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return image_shape(self.card)


def image_shape(card: dict[str, Any]) -> tuple[int, int, int]:
    """``(H, W, C)`` of an image model's output, as its card records it (``output_shape``, written at train
    time from the model itself: a pretrained U-Net fixes it, the families trained here take it from the
    data). Cards written before the shape was recorded only came from families whose config holds it."""
    if card.get("output_shape"):
        h, w, c = card["output_shape"]
        return int(h), int(w), int(c)
    config = card["config"]
    return int(config["resolution"]), int(config["resolution"]), int(config["channels"])


def register(store: Store, name: str, version: str, files: dict[str, bytes], card: dict[str, Any], promote: bool) -> ModelRef:
    area = f"models/{name}"
    staging = staging_dir(store, area, version)
    try:
        for fname, data in files.items():
            store.write_bytes(data, staging, fname)
        store.write_json(card, staging, "model_card.json")
        publish(store, staging, area, version)
    except BaseException:
        discard(store, staging)
        raise
    if promote:
        promote_version(store, name, version)
    return ModelRef(name, version, f"{area}/{version}", card)


def promote_version(store: Store, name: str, version: str) -> None:
    if not store.exists("models", name, version, "model_card.json"):
        raise FileNotFoundError(f"model {name} has no version {version}")
    store.write_json({"model": name, "version": version}, "models", name, "production.json")


def versions(store: Store, name: str) -> list[tuple[dict[str, Any], bool]]:
    """Every version's card, oldest first, with whether it is the production one."""
    if not store.exists("models", name):
        raise FileNotFoundError(f"no model named {name!r} under {store.display('models')}")
    production = store.read_json("models", name, "production.json")["version"] if store.exists("models", name, "production.json") else None
    cards = [store.read_json("models", name, v, "model_card.json") for v in sorted(store.listdir("models", name))
             if store.exists("models", name, v, "model_card.json")]
    return [(c, c["version"] == production) for c in cards]


def resolve(store: Store, name: str, version: str | None = None) -> ModelRef:
    """``version`` of model ``name``, or its production version; a clear error when there is none."""
    if version is None:
        if not store.exists("models", name, "production.json"):
            raise FileNotFoundError(f"model {name!r} has no production version under {store.display('models', name)}; "
                                    f"train it (`aigc train --model {name}`) or promote a version (`aigc promote {name}`)")
        version = store.read_json("models", name, "production.json")["version"]
    path = f"models/{name}/{version}"
    if not store.exists(path, "model_card.json"):
        raise FileNotFoundError(f"model {name!r} version {version!r} not found under {store.display('models', name)}")
    return ModelRef(name, version, path, store.read_json(path, "model_card.json"))


def load(store: Store, ref: ModelRef, device: str = "cpu") -> aigc_models.GenerativeModel:
    """Loads the weights of ``ref`` (from a local path directly, else through a temporary copy)."""
    if store.is_local:
        return aigc_models.load(store.path(ref.weights), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.safetensors")
        with open(local, "wb") as f:
            f.write(store.read_bytes(ref.weights))
        return aigc_models.load(local, device=device)
