"""Scenarios 6 and 7: training workers and the training driver die; training ends where it would have.

6. Two DDP workers, ``max_failures=2``: one worker raises after step 7 (epoch 2) and another exits hard
   after step 12 (epoch 3), each once (``jobs.runtime.faults`` markers). Ray Train restarts the group from the latest
   checkpoint each time; the run finishes its budget and its final weights are bit-for-bit those of a run
   without failures: the checkpoints hold optimiser, schedule and every worker's RNG states, and the workers
   see their rows in a fixed order (``train.deterministic_data``).
7. The driver of ``aigc train`` is SIGKILLed after its first step checkpoint; every checkpoint it left loads
   completely, and the next ``aigc train`` of the same config resumes after the last one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aigc_models
from jobs.runtime import faults
from jobs.store import registry
from jobs.store.storage import Store
from jobs.train.run import run_training
from jobs.train.spec import ModelSpec, TrainSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits(tmp_path_factory, ray_local):
    from jobs.data.curate import run_preprocess
    from jobs.data.spec import BuiltinSource, PreprocessSpec

    store = Store(str(tmp_path_factory.mktemp("digits")))
    run_preprocess([BuiltinSource(kind="builtin", name="digits", limit=180)], PreprocessSpec(resolution=16, channels=1), store)
    return store


def registry_dataset(store: Store) -> str:
    from jobs.data.curated import resolve_dataset_version

    return resolve_dataset_version(store, None)


def _weights(store: Store, ref: registry.ModelRef) -> dict[str, torch.Tensor]:
    return load_file(store.path(ref.weights))


def test_worker_failures_resume_from_checkpoints_to_the_weights_of_a_clean_run(digits, tmp_path, monkeypatch):
    spec = ModelSpec(name="gan", family="dcgan", g_width=8, d_width=8, z_dim=16, epochs=3)
    train = TrainSpec(num_workers=2, batch_size=16, checkpoint_every=1, max_failures=2, lr_schedule="cosine",
                      warmup_steps=3, log_every=1, sample_grid=1, quality_references=False)
    from jobs.train.data import split_stats

    rows = split_stats(digits, registry_dataset(digits), "train", "image", None)[0]
    per_epoch = -(-(rows // 2) // 16)  # optimiser steps per epoch: each worker's equal share in batches of 16
    marker = str(tmp_path / "fault")  # a raise in epoch 2, a hard exit in epoch 3
    monkeypatch.setenv("AIGC_FAULT", f"train-raise:1:{per_epoch + 1},train-exit:1:{2 * per_epoch + 3}")
    monkeypatch.setenv("AIGC_FAULT_MARKER", marker)
    failed = run_training(spec, train, digits)
    assert faults.fired(marker, "train-raise") == 1 and faults.fired(marker, "train-exit") == 1

    monkeypatch.delenv("AIGC_FAULT")
    clean = run_training(spec, train, digits)
    assert clean.steps == failed.steps and clean.epochs == failed.epochs == 3

    card = registry.resolve(digits, "gan", failed.model.version).card
    assert clean.steps == 3 * per_epoch
    resumed = card.resumed_from  # the last restart: from epoch 2's checkpoint, or from epoch 1's when the
    assert resumed is not None and resumed["step"] in (per_epoch, 2 * per_epoch)  # exit beat that report to the controller
    assert resumed["step"] == resumed["epoch"] * per_epoch and resumed["batch"] == 0
    assert registry.resolve(digits, "gan", clean.model.version).card.resumed_from is None
    a, b = _weights(digits, failed.model), _weights(digits, clean.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), \
        [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert card.checkpoint_sha256 == registry.resolve(digits, "gan", clean.model.version).card.checkpoint_sha256


KILLED_DRIVER = """
import sys
from pipelines.cli import main
sys.exit(main(["train", "--config", sys.argv[1], "--out", sys.argv[2], "--model", "tiny-gan"] + sys.argv[3:]))
"""
OVERRIDES = ["train.checkpoint_every_steps=2", "train.quality_references=false", "models.0.epochs=4", "ray.dashboard=false"]


@pytest.mark.heavy
def test_a_killed_training_driver_resumes_after_its_last_checkpoint(tiny_night, tmp_path):
    import shutil

    from pipelines.config import load_config
    from tests.conftest import TINY_CONFIG

    _, source, _ = tiny_night
    store = Store(str(tmp_path / "root"))
    for area in ("curated", "manifests/curated"):  # a curated version and its manifest (jobs.store.layout)
        shutil.copytree(source.path(area), store.path(area))
    marker = tmp_path / "fault"
    env = {**os.environ, "AIGC_FAULT": "train-driver-kill:1:5", "AIGC_FAULT_MARKER": str(marker)}
    log = tmp_path / "driver.log"  # a file, not a pipe: the dead driver's Ray processes hold pipes open
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(TINY_CONFIG), store.root,
                                 *[a for o in OVERRIDES for a in ("--set", o)]],
                                cwd=REPO, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=300)
    finally:  # the killed driver's local Ray processes share its session: take them down too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL and faults.fired(str(marker)) == 1, log.read_text()[-3000:]
    folders = sorted({os.path.dirname(p) for p in store.files("checkpoints", "tiny-gan")
                      if os.path.basename(os.path.dirname(p)).startswith("checkpoint_")})
    assert folders, log.read_text()[-3000:]
    steps = []
    for folder in folders:  # every checkpoint on disk loads completely
        assert aigc_models.load(f"{folder}/model.safetensors").family == "dcgan"
        state = aigc_models.load_state(f"{folder}/train_state.safetensors")
        assert len(state["rng"]) == 2 and set(state["optimizers"]) == {"discriminator", "generator"}
        progress = aigc_models.load_state(f"{folder}/progress.safetensors")  # one sample grid per completed epoch
        assert [int(p["epoch"]) for p in progress] == list(range(1, int(state["epoch"]) + 1))
        assert all(int(p["step"]) <= int(state["step"]) and len(p["images"]) for p in progress)
        steps.append(state["step"])
    assert max(steps) >= 5 and not store.exists("models", "tiny-gan")  # the killed run published nothing
    killed = store.read_json("checkpoints", "tiny-gan", "_active.json")["run_name"]
    copy = Store(str(tmp_path / "fresh"))
    shutil.copytree(store.root, copy.root)
    _fresh_start_on_an_older_curated_version(copy, killed)  # what --fresh and --dataset-version do instead

    cfg = load_config(TINY_CONFIG, output=store.root, overrides=OVERRIDES)
    result = run_training(cfg.models[0], cfg.train, store)
    card = registry.resolve(store, "tiny-gan").card
    assert card.resumed_from["step"] == max(steps)  # right after the last checkpoint the killed driver left
    assert result.epochs == 4 and result.steps > max(steps)


def _fresh_start_on_an_older_curated_version(store: Store, killed: str) -> None:
    """``aigc train --fresh --dataset-version V`` beside the interrupted run of the same config and data: a new
    run from step 0 on V (not the newer latest version), the interrupted run's checkpoints left alone."""
    import shutil

    from jobs.store import layout
    from pipelines.cli import main
    from tests.conftest import TINY_CONFIG

    version = store.read_json(layout.CURATED_LATEST)["dataset_version"]
    newer = f"{version}-newer"  # a later curated version (the same rows under another name): now the latest
    shutil.copytree(store.path("curated", version), store.path("curated", newer))
    manifest = store.read_json("manifests", "curated", f"{version}.json")
    store.write_json({**manifest, "dataset_version": newer}, "manifests", "curated", f"{newer}.json")
    store.write_json({"dataset_version": newer}, layout.CURATED_LATEST)
    interrupted = store.files("checkpoints", "tiny-gan", killed)
    code = main(["train", "--config", str(TINY_CONFIG), "--out", store.root, "--model", "tiny-gan", "--fresh",
                 "--dataset-version", version, *[a for o in OVERRIDES for a in ("--set", o)]])
    assert code == 0
    card = registry.resolve(store, "tiny-gan").card
    assert card.dataset_version == version and card.resumed_from is None
    assert card.ray_train_run != killed and card.epochs == 4 and card.steps > 0
    assert store.files("checkpoints", "tiny-gan", killed) == interrupted
