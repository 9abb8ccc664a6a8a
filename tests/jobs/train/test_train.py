"""Training on Ray Train (2 DDP workers on a real local Ray) and the registry it publishes to."""


import json

import numpy as np
import pandas as pd
import pytest
import torch

import aigc_models
from jobs.store import registry
from jobs.train.run import run_training
from jobs.train.spec import ModelSpec


def test_the_night_published_both_models_to_the_registry(tiny_night):
    cfg, store, result = tiny_night
    for tonight, spec in zip(result.models, cfg.models):
        ref = registry.resolve(store, spec.name)  # via production.json
        assert ref.version == tonight.candidate
        card = ref.card
        assert card.family == spec.family and card.dataset_version == result.preprocess.dataset_version
        assert card.num_workers == 2 and card.steps > 0
        files = set(store.listdir(ref.path))
        assert {"model.safetensors", "model_card.json", "metrics.parquet"} <= files
        assert ("samples.png" if card.modality == "image" else "samples.txt") in files
        if card.modality == "image":  # a row of fixed-seed samples per epoch (16 px + 2 px padding, x2)
            from PIL import Image

            progress = Image.open(store.path(ref.path, "samples_by_epoch.png"))
            assert progress.height == (card.epochs * (16 + 2) + 2) * 2 and progress.width == (10 * 18 + 2) * 2
        else:
            assert store.read_bytes(ref.path, "samples_by_epoch.txt").decode().count("--- epoch") == card.epochs
        assert aigc_models.sha256_file(store.path(ref.weights)) == card.checkpoint_sha256
        metrics = pd.read_parquet(store.path(ref.path, "metrics.parquet"))
        epochs, steps = metrics[metrics.scope == "epoch"], metrics[metrics.scope == "step"]
        assert len(epochs) == card.epochs and np.isfinite(epochs.drop(columns=["scope"]).to_numpy(float)).all()
        assert len(steps) == card.steps // cfg.train.log_every and steps["step"].is_monotonic_increasing
        assert card.workers and {w["rank"] for w in card.workers} == {0, 1}
        assert not store.exists("checkpoints", spec.name, "_active.json")  # published: nothing left to resume
        model = registry.load(store, ref)
        assert model.family == spec.family


def test_quality_references_are_built_beside_the_workers_when_the_cluster_holds_both(tiny_night):
    """They need the curated data alone, so training starts them before its workers; where the cluster cannot
    hold both at once (every CPU or GPU a worker's) they wait for training instead of holding what it needs."""
    from jobs.train.run import _references_fit_beside_workers

    cfg, store, result = tiny_night
    gan = registry.resolve(store, "tiny-gan").card
    assert gan.quality["dataset_version"] == result.preprocess.dataset_version and gan.quality["classifier"]
    assert 0 < gan.quality["seconds"] < gan.wall_seconds  # the task's own time, not the wait for training
    assert _references_fit_beside_workers(cfg.train)  # 2 workers of 1 CPU + the task on the suite's 4 CPUs
    assert not _references_fit_beside_workers(cfg.train.model_copy(update={"num_workers": 4}))
    assert not _references_fit_beside_workers(cfg.train.model_copy(update={"use_gpu": True}))  # no GPU here


def test_gan_config_comes_from_the_data(tiny_night):
    cfg, store, _ = tiny_night
    card = registry.resolve(store, "tiny-gan").card
    assert card.config["resolution"] == cfg.preprocess.resolution == 16
    assert card.config["classes"] == [str(d) for d in range(10)]  # the digits present in the curated split
    assert card.config["g_width"] == 8  # the model entry's hyperparameters


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


def test_every_family_trains_on_ray_and_generates(tmp_path, ray_local):
    """VAE, DDPM and char-RNN go through the same Ray Train loop and Ray Data generation as the GAN and GPT."""
    import pyarrow.dataset as pads

    from jobs.data.curate import run_preprocess
    from jobs.data.spec import BuiltinSource, PreprocessSpec
    from jobs.generate.run import run_generation
    from jobs.generate.spec import GenerateSpec, RequestSpec
    from jobs.store.storage import Store
    from jobs.train.spec import TrainSpec

    store = Store(str(tmp_path))
    run_preprocess([BuiltinSource(kind="builtin", name="digits", limit=120),
                    BuiltinSource(kind="builtin", name="text-corpus", limit=120)],
                   PreprocessSpec(resolution=16, channels=1), store)
    train = TrainSpec(num_workers=2, epochs=1, batch_size=16, sample_grid=2, grad_accum=2, lr_schedule="cosine",
                      warmup_steps=1)
    specs = [ModelSpec(name="v", family="vae", max_steps=2, z_dim=8, width=8),
             ModelSpec(name="d", family="ddpm", max_steps=2, width=8, channel_mult=[1, 2], timesteps=20),
             ModelSpec(name="c", family="char_rnn", max_steps=2, hidden=16, embed_dim=8, seq_len=16,
                       tokenizer="bpe", vocab_size=300)]
    for spec in specs:
        result = run_training(spec, train, store)
        card = registry.resolve(store, spec.name).card
        assert card.family == spec.family and card.steps == 2 and result.steps == 2
        files = store.listdir(result.model.path)
        assert ("samples.png" if card.modality == "image" else "samples.txt") in files and "loss_curve.png" in files
        metrics = pd.read_parquet(store.path(result.model.path, "metrics.parquet"))
        assert np.isfinite(metrics["val_loss"]).all() and "lr_factor" in metrics  # validated after the epoch
    _vae_fit_covers_both_workers_shards(store)
    requests = [RequestSpec(model="v", labels=["3"], per_label=2), RequestSpec(model="d", per_label=1, steps=3, chunk=4),
                RequestSpec(model="c", prompts=["The "], per_prompt=2, max_new_tokens=8)]
    gen = run_generation(GenerateSpec(requests=requests, concurrency=1, filters={"enabled": False}), store, "2026-11-21", "families")
    rows = pads.dataset(store.path("generated", "date=2026-11-21"), format="parquet").to_table().to_pandas()
    assert gen.rows == len(rows) == 2 + 10 + 2
    assert rows.groupby("model_name")["modality"].first().to_dict() == {"c": "text", "d": "image", "v": "image"}
    assert all(t.startswith("The ") for t in rows.loc[rows.model_name == "c", "text"])
    bpe = registry.load(store, registry.resolve(store, "c"))  # the tokenizer trained on the curated texts
    assert 259 < bpe.tokenizer.vocab_size <= 300 and len(bpe.tokenizer.encode("the ")) < len("the ")
    assert {(json.loads(s)["steps"], json.loads(s)["chunk"]) for s in rows.loc[rows.model_name == "d", "sampler"]} == {(3, 4)}


def _vae_fit_covers_both_workers_shards(store) -> None:
    """The VAE's latent fit after the last step (``fits_data``) is summed over the two workers: it equals the fit
    over the whole training split on the driver, and the card's sampler records the fitted prior."""
    from aigc_models.training import fit_to_data
    from jobs.data.curated import rows_filter, split_dataset
    from jobs.train.data import COLUMNS, training_columns

    entry = registry.resolve(store, "v")
    model = registry.load(store, entry)
    assert entry.card.sampler_defaults["prior"] == "fitted" and int(model.prior_fitted) == 1
    rows = split_dataset(store, entry.card.dataset_version, "train").to_table(
        columns=COLUMNS, filter=rows_filter("image", None)).to_pandas()
    driver = aigc_models.build("vae", model.config.__dict__)
    driver.load_state_dict(model.state_dict())
    driver.prior_fitted.zero_()
    fit_to_data(driver, [driver.make_batch(training_columns(rows, "image"))])
    assert torch.allclose(driver.prior_mean, model.prior_mean, atol=1e-5)
    assert torch.allclose(driver.prior_scale, model.prior_scale, atol=1e-4)


def test_learning_rate_warms_up_then_decays_on_a_cosine():
    from aigc_models.training import lr_factor

    f = [lr_factor(s, total=100, warmup=10, schedule="cosine", min_ratio=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.55) and f[99] > 0.1 >= lr_factor(100, 100, 10, "cosine", 0.1) - 1e-9
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # never rises after the warm-up
    assert lr_factor(50, 100, 0, "constant", 0.1) == 1.0


@pytest.fixture()
def digits_store(tmp_path, ray_local):
    from jobs.data.curate import run_preprocess
    from jobs.data.spec import BuiltinSource, PreprocessSpec
    from jobs.store.storage import Store

    store = Store(str(tmp_path))
    run_preprocess([BuiltinSource(kind="builtin", name="digits", limit=150)], PreprocessSpec(resolution=8, channels=1), store)
    return store


def test_an_interrupted_run_resumes_mid_epoch(digits_store, monkeypatch, tmp_path):
    """A worker dies (a real SIGKILL) with no retries left, as when the machine is lost: the next
    ``run_training`` of the same config resumes from the step checkpoint (``fresh``: see the next test)."""
    import ray.train

    from jobs.train.spec import TrainSpec

    store = digits_store
    spec = ModelSpec(name="r", family="vae", z_dim=4, width=4, epochs=2)
    train = TrainSpec(num_workers=2, batch_size=8, max_failures=0, checkpoint_every_steps=3, log_every=1, sample_grid=1)
    monkeypatch.setenv("AIGC_FAULT", "train-worker-kill:1:3")  # the last worker SIGKILLs itself after a checkpoint
    monkeypatch.setenv("AIGC_FAULT_MARKER", str(tmp_path / "fault"))
    with pytest.raises(ray.train.TrainingFailedError):
        run_training(spec, train, store)
    first = store.read_json("checkpoints", "r", "_active.json")
    weights = store.files("checkpoints", "r", first["run_name"], suffix="model.safetensors")
    assert weights  # every checkpoint the killed run left loads completely: weights, training state, metrics
    for w in weights:
        folder = w.rsplit("/", 1)[0]
        assert aigc_models.load(w).family == "vae"
        state = aigc_models.load_state(f"{folder}/train_state.safetensors")
        assert state["step"] >= 3 and set(state["optimizers"]) == {"model"} and len(state["rng"]) == 2
        assert len(pd.read_parquet(f"{folder}/metrics.parquet")) >= 1
    monkeypatch.delenv("AIGC_FAULT")
    result = run_training(spec, train, store)  # resumes the interrupted run (the drill never fires there)
    card = registry.resolve(store, "r").card
    assert card.resumed_from["step"] == 3 and card.resumed_from["epoch"] == 0 and card.resumed_from["batch"] == 3
    assert card.ray_train_run == first["run_name"] and card.epochs == 2 == result.epochs
    metrics = pd.read_parquet(store.path(result.model.path, "metrics.parquet"))
    steps = metrics.loc[metrics.scope == "step", "step"].tolist()
    assert steps == list(range(1, result.steps + 1))  # one row per step, none lost or repeated by the resume
    assert not store.exists("checkpoints", "r", first["run_name"])  # published, so its checkpoints are gone
    assert result.promoted  # promote: "first"; later versions wait (see the CLI's --promote test)


def test_fresh_starts_a_new_run_beside_an_interrupted_one(tmp_path):
    """Which Ray Train run a ``run_training`` continues: the interrupted one of the same config and data,
    unless ``fresh`` (``aigc train --fresh``) or the config changed; either way the old run's checkpoints stay."""
    from jobs.store.storage import Store
    from jobs.train.run import _run_name

    store, spec = Store(str(tmp_path)), ModelSpec(name="r", family="vae")
    first, resumed = _run_name(store, spec, "f" * 64, fresh=False)
    assert not resumed and store.read_json("checkpoints", "r", "_active.json")["run_name"] == first
    store.write_json({"step": 3}, "checkpoints", "r", first, "marker.json")  # stands in for its checkpoints
    assert _run_name(store, spec, "f" * 64, fresh=False) == (first, True)
    fresh, resumed = _run_name(store, spec, "f" * 64, fresh=True)
    active = store.read_json("checkpoints", "r", "_active.json")
    assert not resumed and fresh != first and active == {**active, "run_name": fresh, "fingerprint": "f" * 64}
    assert store.exists("checkpoints", "r", first, "marker.json")
    other, resumed = _run_name(store, spec, "0" * 64, fresh=False)  # another config: never resumes its run
    assert not resumed and other not in (first, fresh)


def test_data_that_does_not_fit_a_pinned_model_config_fails_before_workers_start(digits_store):
    from jobs.train.spec import TrainSpec

    with pytest.raises(ValueError, match="model big: resolution 16 does not match the curated data's 8"):
        run_training(ModelSpec(name="big", family="vae", resolution=16), TrainSpec(), digits_store)
    with pytest.raises(ValueError, match="model rgb: channels 3 does not match the curated data's 1"):
        run_training(ModelSpec(name="rgb", family="ddpm", channels=3), TrainSpec(), digits_store)
    with pytest.raises(ValueError, match="labels outside the model's classes: 3, 4, 5"):
        run_training(ModelSpec(name="few", family="vae", classes=["0", "1", "2", "6", "7", "8", "9"]), TrainSpec(), digits_store)
    assert not digits_store.exists("checkpoints")


def test_replaying_a_small_split_from_memory_trains_the_weights_of_a_fresh_pass_every_epoch(digits_store):
    """A small split's later epochs replay the worker's first pass (no Ray Data execution per epoch): the same
    batches in the same order as streaming the split from Parquet every epoch, so the same weights."""
    from jobs.train.spec import TrainSpec

    spec = ModelSpec(name="k", family="vae", z_dim=4, width=4, epochs=3)
    weights, replayed = {}, {}
    for cache in (True, False):
        result = run_training(spec, TrainSpec(num_workers=2, batch_size=16, cache_dataset=cache), digits_store, fresh=True)
        weights[cache] = result.model.card.checkpoint_sha256
        epochs = pd.read_parquet(digits_store.path(result.model.path, "metrics.parquet")).query("scope == 'epoch'")
        replayed[cache] = epochs["data_replayed"].tolist()
    assert replayed == {True: [0.0, 1.0, 1.0], False: [0.0, 0.0, 0.0]}
    assert weights[True] == weights[False]
