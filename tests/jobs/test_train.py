"""Training on Ray Train (2 DDP workers on a real local Ray) and the registry it publishes to."""


import numpy as np
import pandas as pd
import pytest

import aigc_models
from jobs import registry
from jobs.specs import ModelSpec
from jobs.train import run_training


def test_the_night_published_both_models_to_the_registry(tiny_night):
    cfg, store, result = tiny_night
    for trained, spec in zip(result["train"], cfg.models):
        ref = registry.resolve(store, spec.name)  # via production.json
        assert ref.version == trained["model"]["version"]
        card = ref.card
        assert card["family"] == spec.family and card["dataset_version"] == result["preprocess"]["dataset_version"]
        assert card["num_workers"] == 2 and card["steps"] > 0
        files = set(store.listdir(ref.path))
        assert {"model.safetensors", "model_card.json", "metrics.parquet"} <= files
        assert ("samples.png" if card["modality"] == "image" else "samples.txt") in files
        assert aigc_models.sha256_file(store.path(ref.weights)) == card["checkpoint_sha256"]
        metrics = pd.read_parquet(store.path(ref.path, "metrics.parquet"))
        assert len(metrics) == card["epochs"] and np.isfinite(metrics.drop(columns=["epoch"]).to_numpy()).all()
        model = registry.load(store, ref)
        assert model.family == spec.family


def test_gan_config_comes_from_the_data(tiny_night):
    cfg, store, _ = tiny_night
    card = registry.resolve(store, "tiny-gan").card
    assert card["config"]["resolution"] == cfg.preprocess.resolution == 16
    assert card["config"]["classes"] == [str(d) for d in range(10)]  # the digits present in the curated split
    assert card["config"]["g_width"] == 8  # the model entry's hyperparameters


def test_no_rows_is_an_error_before_any_worker_starts(tiny_night):
    cfg, store, _ = tiny_night
    spec = ModelSpec(name="empty", family="dcgan", sources=["builtin:nothing"])
    with pytest.raises(ValueError, match="has no image rows to train on"):
        run_training(spec, cfg.train, store)
    assert not store.exists("checkpoints", "empty")


def test_asking_for_gpus_the_cluster_lacks_fails_before_workers_start(tiny_night):
    cfg, store, _ = tiny_night
    spec = cfg.model("tiny-gan")
    with pytest.raises(ValueError, match="train.use_gpu is true with 2 workers, but the Ray cluster has 0 GPUs"):
        run_training(spec, cfg.train.model_copy(update={"use_gpu": True}), store)
