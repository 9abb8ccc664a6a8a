"""The model registry: ``ROOT/models/<name>/<version>/``, its ``model_card.json`` and the ``production.json`` pointer.

A version folder is written in staging and committed whole: ``model.safetensors`` (self-describing: family and
config in its metadata), ``model_card.json`` (a ``ModelCard``), ``metrics.parquet`` and pictures of samples and
losses. This module alone reads and writes cards and ``production.json``; everything else asks it
(``resolve``, ``production``, ``versions``) and gets typed records back.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

import aigc_models
from jobs.store.commit import commit, discard, staging_dir
from jobs.store.storage import Store

CARD = "model_card.json"
PRODUCTION = "production.json"


class ModelCard(BaseModel):
    """What one model version is: its lineage (dataset, checkpoint hash, code), how it was trained, what it makes
    (``output_shape``, sampler defaults) and its quality references (``quality``, see ``jobs.gate.references``).
    Cards written by older versions of the pipeline lack some fields; they load with the defaults, and an image
    card without ``output_shape`` takes it from its family config (the only place it was recorded then) when the
    config has it (a pretrained model's does not: ``image_shape`` then says so)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: str
    family: str
    modality: Literal["image", "text"]
    config: dict[str, Any]  # the family's config dataclass, as saved in the weights' metadata too
    parameters: int
    dataset_version: str
    checkpoint_sha256: str
    created_at: str
    train_rows: int = 0
    steps: int = 0
    epochs: int = 0
    wall_seconds: float = 0.0
    samples_per_second: Optional[float] = None
    final_metrics: dict[str, float] = Field(default_factory=dict)  # last epoch's means; may hold NaN or inf
    ray_train_run: Optional[str] = None  # None: not trained here (pretrained weights used as they are)
    num_workers: Optional[int] = None
    use_gpu: bool = False
    sampler_defaults: dict[str, Any] = Field(default_factory=dict)
    code_version: str = "unknown"
    resumed_from: Optional[dict[str, Any]] = None
    workers: list[dict[str, Any]] = Field(default_factory=list)
    quality: Optional[dict[str, Any]] = None
    spec_fingerprint: Optional[str] = None  # the model entry and train settings it was trained with (jobs.train.policy)
    output_shape: Optional[tuple[int, int, int]] = None  # (H, W, C) of an image model's samples
    used_as_is: bool = False  # pretrained weights registered without training (finetune: false)

    @model_validator(mode="after")
    def _shape_of_older_cards(self) -> "ModelCard":
        if self.modality == "image" and self.output_shape is None and {"resolution", "channels"} <= set(self.config):
            r, c = int(self.config["resolution"]), int(self.config["channels"])
            self.output_shape = (r, r, c)
        return self

    @property
    def classes(self) -> list[str]:
        """The labels a conditional model was trained on (empty for unconditional and text models)."""
        return [str(c) for c in self.config.get("classes") or []]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.output_shape is None:
            raise ValueError(f"model {self.name} makes {self.modality}, not images" if self.modality != "image" else
                             f"model {self.name} {self.version}: its card records no image shape (registered before "
                             "cards had output_shape); register it again")
        return self.output_shape

    def lineage(self) -> dict[str, Any]:
        """The fields a generated row and a night's manifest record about the model behind them."""
        return {"version": self.version, "family": self.family, "checkpoint_sha256": self.checkpoint_sha256,
                "dataset_version": self.dataset_version}


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A registered version: where its folder is and its card."""

    name: str
    version: str
    path: str  # store path of the version folder
    card: ModelCard

    @property
    def weights(self) -> str:
        return f"{self.path}/model.safetensors"


def _folder(name: str, version: str) -> str:
    return f"models/{name}/{version}"


def read_card(store: Store, path: str) -> ModelCard:
    """The card of the version folder at store path ``path``."""
    return ModelCard.model_validate(store.read_json(path, CARD))


def register(store: Store, card: ModelCard, files: dict[str, bytes], promote: bool) -> ModelRef:
    """Commits a new version folder (``files`` plus the card) and, with ``promote``, points production at it."""
    area = f"models/{card.name}"
    staging = staging_dir(store, area, card.version)
    try:
        for fname, data in files.items():
            store.write_bytes(data, staging, fname)
        store.write_json(card.model_dump(), staging, CARD)  # python mode: non-finite metrics stay NaN / Infinity
        commit(store, staging, area, card.version)
    except BaseException:
        discard(store, staging)
        raise
    if promote:
        promote_version(store, card.name, card.version)
    return ModelRef(card.name, card.version, _folder(card.name, card.version), card)


def promote_version(store: Store, name: str, version: str) -> None:
    if not store.exists(_folder(name, version), CARD):
        raise FileNotFoundError(f"model {name} has no version {version}")
    store.write_json({"model": name, "version": version}, "models", name, PRODUCTION)


def production(store: Store, name: str) -> str | None:
    """The version ``production.json`` points at, or None when the model has none yet."""
    if not store.exists("models", name, PRODUCTION):
        return None
    return store.read_json("models", name, PRODUCTION)["version"]


def versions(store: Store, name: str) -> list[tuple[ModelCard, bool]]:
    """Every version's card, oldest first, with whether it is the production one."""
    if not store.exists("models", name):
        raise FileNotFoundError(f"no model named {name!r} under {store.display('models')}")
    current = production(store, name)
    cards = [read_card(store, _folder(name, v)) for v in sorted(store.listdir("models", name))
             if store.exists(_folder(name, v), CARD)]
    return [(c, c.version == current) for c in cards]


def resolve(store: Store, name: str, version: str | None = None) -> ModelRef:
    """``version`` of model ``name``, or its production version; a clear error when there is none."""
    if version is None:
        version = production(store, name)
        if version is None:
            raise FileNotFoundError(f"model {name!r} has no production version under {store.display('models', name)}; "
                                    f"train it (`aigc train --model {name}`) or promote a version (`aigc promote {name}`)")
    path = _folder(name, version)
    if not store.exists(path, CARD):
        raise FileNotFoundError(f"model {name!r} version {version!r} not found under {store.display('models', name)}")
    return ModelRef(name, version, path, read_card(store, path))


def load(store: Store, ref: ModelRef, device: str = "cpu") -> aigc_models.GenerativeModel:
    """Loads the weights of ``ref`` (from a local path directly, else through a temporary copy)."""
    if store.is_local:
        return aigc_models.load(store.path(ref.weights), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.safetensors")
        with open(local, "wb") as f:
            f.write(store.read_bytes(ref.weights))
        return aigc_models.load(local, device=device)
