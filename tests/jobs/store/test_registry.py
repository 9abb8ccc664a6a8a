"""The model registry's typed records on a local store: cards old and new, production, versions."""

import math

import pytest

from jobs.store import registry
from jobs.store.registry import ModelCard
from jobs.store.storage import Store

CARD = {"name": "m", "family": "dcgan", "modality": "image", "config": {"resolution": 16, "channels": 1, "classes": [0, 1]},
        "parameters": 10, "dataset_version": "d1", "checkpoint_sha256": "ab" * 32, "created_at": "2026-01-01T00:00:00+00:00"}


def test_a_card_from_before_output_shape_takes_it_from_its_config_and_keeps_unknown_keys():
    card = ModelCard.model_validate({**CARD, "version": "v1", "some_future_key": 3})
    assert card.image_shape == (16, 16, 1) and card.classes == ["0", "1"]
    assert card.model_dump()["some_future_key"] == 3  # written back as it was read
    text = ModelCard.model_validate({**CARD, "version": "v1", "modality": "text", "config": {}})
    with pytest.raises(ValueError, match="makes text, not images"):
        text.image_shape
    assert card.lineage() == {"version": "v1", "family": "dcgan", "checkpoint_sha256": "ab" * 32, "dataset_version": "d1"}
    pretrained = ModelCard.model_validate({**CARD, "version": "v0", "family": "hf_diffusion", "config": {"path": "/m"}})
    with pytest.raises(ValueError, match="records no image shape"):  # loads (listing versions works), says why here
        pretrained.image_shape


def test_register_promote_resolve_and_list_versions(tmp_path):
    store = Store(str(tmp_path))
    assert registry.production(store, "m") is None
    with pytest.raises(FileNotFoundError, match="has no production version"):
        registry.resolve(store, "m")
    first = registry.register(store, ModelCard.model_validate({**CARD, "version": "v1", "final_metrics": {"loss": math.nan}}),
                              {"model.safetensors": b"w1"}, promote=True)
    second = registry.register(store, ModelCard.model_validate({**CARD, "version": "v2"}), {"model.safetensors": b"w2"},
                               promote=False)
    assert registry.production(store, "m") == "v1" and registry.resolve(store, "m").path == first.path == "models/m/v1"
    assert registry.resolve(store, "m", "v2").card == second.card and store.read_bytes(second.weights) == b"w2"
    assert math.isnan(registry.resolve(store, "m", "v1").card.final_metrics["loss"])  # NaN survives the JSON file
    registry.promote_version(store, "m", "v2")
    assert [(c.version, prod) for c, prod in registry.versions(store, "m")] == [("v1", False), ("v2", True)]
    with pytest.raises(FileNotFoundError, match="has no version v9"):
        registry.promote_version(store, "m", "v9")
    assert store.listdir("staging", "models", "m") == []  # committed: nothing left in staging
