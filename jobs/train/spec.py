"""Config sections of training: the ``models`` entries (family and hyperparameters) and the ``train`` section
(workers, schedule, checkpoints, when the nightly flow retrains)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

import aigc_models
from jobs.runtime.spec import NAME_RE, Strict


class ModelSpec(BaseModel):
    """One model to train. Keys other than the ones below are the family's hyperparameters
    (``aigc_models.<family>`` config fields) and are checked against that family."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=NAME_RE)
    family: Literal[tuple(aigc_models.FAMILIES)]  # type: ignore[valid-type]
    epochs: Optional[int] = Field(None, ge=1)
    max_steps: Optional[int] = Field(None, ge=1)  # stop after this many optimiser steps
    batch_size: Optional[int] = Field(None, ge=1)  # per worker; rows (images or documents)
    sources: Optional[list[str]] = None  # curated sources to train on (default: all of the modality)
    seed: int = 0
    finetune: bool = True  # false: a pretrained family (hf_diffusion, hf_causal_lm) is registered with its weights
    #   as they are (no Ray Train run; quality references, evaluation and the gate still apply)

    @model_validator(mode="after")
    def _check_finetune(self) -> "ModelSpec":
        if self.finetune:
            return self
        if not aigc_models.FAMILIES[self.family].pretrained:
            pretrained = ", ".join(f for f, c in aigc_models.FAMILIES.items() if c.pretrained)
            raise ValueError(f"'finetune': false needs a pretrained family ({pretrained}); a {self.family} model "
                             "starts from random weights and must be trained")
        for key in ("epochs", "max_steps", "batch_size"):
            if getattr(self, key) is not None:
                raise ValueError(f"'{key}': the model is used as it is (finetune: false), so it has no {key}; "
                                 "drop it or set finetune: true")
        return self

    @model_validator(mode="after")
    def _check_hyperparameters(self) -> "ModelSpec":
        cls = aigc_models.FAMILIES[self.family].config_class
        fields = {f.name: f for f in dataclasses.fields(cls)}
        extra = dict(self.model_extra or {})
        for key in extra:
            if key not in fields:
                raise ValueError(f"unknown key '{key}' for family {self.family} (known: {', '.join(sorted(fields))})")
        for key in ("resolution", "channels", "classes"):
            if key in extra and cls is aigc_models.DCGANConfig:
                raise ValueError(f"'{key}' comes from the curated data (preprocess), not the model entry")
        hints = typing.get_type_hints(cls)  # the families' annotations are strings (``from __future__``)
        for key, value in extra.items():
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=False)
            except ValidationError as exc:
                raise ValueError(f"'{key}': {exc.errors()[0]['msg']}") from None
        return self

    @property
    def modality(self) -> str:
        return aigc_models.FAMILIES[self.family].modality

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainSpec(Strict):
    num_workers: int = Field(2, ge=1)
    concurrent_models: bool = False  # the nightly flow trains independent models at the same time when the cluster
    #   holds all their worker groups at once (each one's start-up and registration overlap the others' steps).
    #   Only where the cluster's CPUs are real cores: two 2-thread workers on 2 cores ran 4.7x slower per step
    use_gpu: bool = False
    resources_per_worker: Optional[dict[str, float]] = None  # default: {"CPU": 1} (+ {"GPU": 1} with use_gpu)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # STRICT_SPREAD: one worker per node
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints
    checkpoint_every_steps: Optional[int] = Field(None, ge=1)  # also checkpoint every N optimiser steps (mid-epoch)
    log_every: int = Field(10, ge=0)  # optimiser steps per metrics.parquet row (scope "step"); 0: per epoch only
    keep_finished_checkpoints: bool = False  # keep a run's Ray Train checkpoints after it is published
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(1, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)  # batches per optimiser step (effective batch = batch_size x grad_accum x workers)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decays to min_lr_ratio x lr by the last step
    warmup_steps: int = Field(0, ge=0)  # linear learning-rate warm-up, in optimiser steps
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    validation: bool = True  # loss on the val split after every epoch (val_* metrics)
    epoch_samples: bool = True  # fixed-seed samples after every epoch -> samples_by_epoch.png / .txt
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    cache_dataset: bool = True  # decode the split once into Ray's object store (on the driver when it is small,
    #   and then each worker replays its first epoch's batches from memory) instead of every epoch; turn off
    #   for splits larger than the object store (they then stream from Parquet each epoch)
    deterministic_data: bool = True  # every worker sees the same rows in the same order on every run (Ray Data's
    #   preserve_order, no locality hints), so a restarted or resumed run ends with the weights of an uninterrupted
    #   one; turn off on big multi-node clusters to let shards follow block locality
    promote: Literal["first", "always", "never"] = "first"  # point production.json at the new version: only when
    #   the model has none yet (first), always, or never; otherwise `aigc promote` or the nightly gate decides

    @field_validator("promote", mode="before")
    @classmethod
    def _promote_bool(cls, v: Any) -> Any:
        return {True: "always", False: "never"}.get(v, v) if isinstance(v, bool) else v
    sample_grid: int = Field(10, ge=1)  # images per class (or texts) in samples.png / samples.txt
    quality_references: bool = True  # build the generation filters' references next to each model
    retrain: "RetrainSpec" = Field(default_factory=lambda: RetrainSpec())  # when the nightly flow trains


class RetrainSpec(Strict):
    """When the nightly flow trains a model instead of generating with its production version."""

    on_data_change: bool = True  # the curated dataset version differs from the one production was trained on
    on_config_change: bool = True  # the model entry or the train section changed since production was trained
    every_days: Optional[int] = Field(None, ge=1)  # also retrain when production is this many days old
