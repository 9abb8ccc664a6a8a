"""What a version's loss curve shows: each family declares its loss metrics."""

import pandas as pd

from jobs.train.loop import LoopConfig
from jobs.train.register import loss_series


def test_loss_series_follow_the_familys_declared_losses_from_the_right_rows():
    metrics = pd.DataFrame([
        {"scope": "step", "epoch": 1, "step": 1, "loss_d": 1.0, "loss_g": 2.0, "d_real": 0.5},
        {"scope": "step", "epoch": 1, "step": 2, "loss_d": 0.9, "loss_g": 1.8, "d_real": 0.6},
        {"scope": "epoch", "epoch": 1, "step": 2, "loss_d": 0.95, "loss_g": 1.9, "d_real": 0.55, "val_loss_d": 1.1}])
    steps, series = loss_series(metrics, "dcgan")
    assert steps == [1.0, 2.0, 2.0] and set(series) == {"loss_d", "loss_g", "val_loss_d"}  # d_real is no loss
    assert series["loss_d"][:2] == [1.0, 0.9] and pd.isna(series["loss_d"][2])  # training losses: per-step rows
    assert pd.isna(series["val_loss_d"][0]) and series["val_loss_d"][2] == 1.1  # validation: per-epoch rows
    vae = pd.DataFrame([{"scope": "epoch", "epoch": 1, "step": 3, "loss": 1.0, "recon": 0.7, "kl": 0.3, "lr_factor": 1.0}])
    assert set(loss_series(vae, "vae")[1]) == {"loss", "recon", "kl"}


def test_a_runs_fingerprint_leaves_the_injected_faults_out():
    base = dict(name="m", family="vae", model_config={}, seed=0, epochs=1, max_steps=None, batch_size=8, total_steps=4,
                checkpoint_every=1, checkpoint_every_steps=None, log_every=1, grad_clip=1.0, grad_accum=1,
                precision="auto", warmup_steps=0, lr_schedule="constant", min_lr_ratio=0.1, validate=False,
                epoch_samples=False)
    drilled = LoopConfig(**base, faults=[{"point": "train-raise", "count": 1, "at": 2, "marker": "/m", "driver_pid": 1}])
    assert LoopConfig(**base).fingerprint_fields() == drilled.fingerprint_fields()
    assert LoopConfig(**{**base, "seed": 1}).fingerprint_fields() != drilled.fingerprint_fields()
