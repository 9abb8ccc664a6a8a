"""When a model is trained, and whether a new version becomes production at once.

The nightly flow trains a model only when its production version is out of date (``retrain_reason``): the
curated data changed, the model entry or the weight-shaping train settings changed (``spec_fingerprint``,
recorded in every card), or production is older than ``train.retrain.every_days``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from jobs.store import registry
from jobs.store.storage import Store
from jobs.train.spec import ModelSpec, TrainSpec

# TrainSpec fields that change the weights a run produces (the rest is bookkeeping, placement or logging).
SHAPING_TRAIN_FIELDS = ("num_workers", "epochs", "batch_size", "grad_clip", "grad_accum", "lr_schedule", "warmup_steps",
                        "min_lr_ratio", "precision")


def spec_fingerprint(spec: ModelSpec, train: TrainSpec) -> str:
    """What the model entry and the train section ask for, as a hash: recorded in the card, so the nightly flow
    can tell that production was trained with another config."""
    shaping = {k: getattr(train, k) for k in SHAPING_TRAIN_FIELDS}
    entry = spec.model_dump(mode="json")
    if entry.get("finetune") is True:  # the default: left out, so versions trained before the key existed still match
        del entry["finetune"]
    return hashlib.sha256(json.dumps([entry, shaping], sort_keys=True).encode()).hexdigest()[:16]


def retrain_reason(store: Store, spec: ModelSpec, train: TrainSpec, dataset_version: str, run_date: str) -> str | None:
    """Why tonight should train ``spec`` (``None``: production is up to date and is reused)."""
    if registry.production(store, spec.name) is None:
        return "no production version yet"
    card = registry.resolve(store, spec.name).card
    policy = train.retrain
    if policy.on_data_change and card.dataset_version != dataset_version:
        return f"dataset changed ({card.dataset_version} -> {dataset_version})"
    if policy.on_config_change and card.spec_fingerprint != spec_fingerprint(spec, train):
        return "model or train config changed since production was trained"
    if policy.every_days:
        age = (datetime.fromisoformat(run_date).date() - datetime.fromisoformat(card.created_at).date()).days
        if age >= policy.every_days:
            return f"cadence: production is {age} days old (train.retrain.every_days={policy.every_days})"
    return None


def promotes_at_once(store: Store, name: str, policy: str) -> bool:
    """Whether a new version of ``name`` becomes production as soon as it is registered: ``always``, or ``first``
    while the model has none (the nightly flow passes ``never`` and lets the gate decide)."""
    return policy == "always" or (policy == "first" and registry.production(store, name) is None)
