"""Typed inputs of the jobs: what each stage needs, validated at the edge (unknown keys are errors).

``pipelines.config`` assembles these into one job config and loads it from YAML; the jobs accept them
directly, so they can also be driven from Python without Prefect.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

import aigc_models

NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
BUILTIN_SOURCES = ("digits", "faces", "textures", "text-corpus")


class SecuritySpec(BaseModel):
    """Where the pipeline may read and write (see ``jobs.paths``)."""

    model_config = ConfigDict(extra="forbid")
    allowed_roots: list[str] = Field(default_factory=list)  # local folders and URI prefixes (s3://bucket/prefix);
    #   empty: unrestricted. Config paths outside are config errors; table cells and files outside (links,
    #   ../) are path_not_allowed rejects, never opened

    def policy(self) -> Any:
        from .paths import PathPolicy

        return PathPolicy(tuple(self.allowed_roots))


class ErrorBudgetExceeded(ValueError):
    """More inputs or generated rows were rejected than the config's error budget allows: nothing was published.
    A ValueError, so Prefect does not retry it (the same inputs would be rejected again)."""


def check_error_budget(key: str, rejected: int, total: int, by_reason: dict[str, int], budget: float | None,
                       what: str) -> None:
    """Raises ``ErrorBudgetExceeded`` naming the config ``key`` when ``rejected / total`` is over ``budget``."""
    if budget is None or total == 0 or rejected <= budget * total:
        return
    top = ", ".join(f"{reason} {n:,}" for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:3])
    raise ErrorBudgetExceeded(f"{key}: {rejected:,} of {total:,} {what} rejected ({rejected / total:.1%} > "
                              f"{budget:.1%}; {top}); nothing was published")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class RaySpec(Strict):
    address: Optional[str] = None  # None: RAY_ADDRESS or a new local instance
    num_cpus: Optional[int] = Field(None, ge=1)  # logical CPU slots of a local instance
    listen: Literal["localhost", "network"] = "localhost"  # a local instance's sockets: 127.0.0.1 only, or the
    #   machine's address (other machines can reach it: keep RAY_AUTH_MODE=token); see jobs/ray_runtime.py
    dashboard: bool = True  # a local instance's dashboard (about 5% of a 2-core machine while it runs)
    autoscaling: bool = False  # the cluster adds nodes on demand (KubeRay, `ray up`): stages skip the check of their
    #   actors and workers against the nodes up now (jobs/capacity.py) and rely on their start timeouts instead


class BuiltinSource(Strict):
    kind: Literal["builtin"]
    name: Literal[BUILTIN_SOURCES]  # type: ignore[valid-type]
    limit: Optional[int] = Field(None, ge=1)  # first N units only (quick runs)

    @property
    def source_id(self) -> str:
        return f"builtin:{self.name}"


class ImageFolderSource(Strict):
    """A folder of images: class-per-subfolder (labels = folder names) or flat (no labels)."""

    kind: Literal["image_folder"]
    path: str
    labels: Literal["auto", "folders", "none"] = "auto"  # auto: folders when there are subfolders
    follow_symlinks_outside: bool = False  # links leading out of the folder are symlink_outside rejects
    limit: Optional[int] = Field(None, ge=1)

    @property
    def source_id(self) -> str:
        return f"image_folder:{self.path}"


class TextFilesSource(Strict):
    """Text files matched by a glob; one document per line (``per: line``) or per file (``per: file``)."""

    kind: Literal["text_files"]
    path: str  # a glob such as /data/copy/*.txt
    per: Literal["line", "file"] = "line"
    limit: Optional[int] = Field(None, ge=1)

    @property
    def source_id(self) -> str:
        return f"text_files:{self.path}"


class TableSource(Strict):
    """A Parquet, CSV or JSONL table (local path or URI). One row is one unit: an image when
    ``image_column`` holds bytes, a path/URI or a ``{bytes, path}`` struct; else a text from ``text_column``.
    Columns not named here are kept, as JSON, in the curated ``attributes`` column."""

    kind: Literal["table"]
    path: str
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"
    image_column: Optional[str] = None
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    limit: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _needs_content(self) -> "TableSource":
        if not self.image_column and not self.text_column:
            raise ValueError("give image_column or text_column (or both: the text is kept as the caption)")
        return self

    @property
    def source_id(self) -> str:
        return f"table:{self.path}"


Source = Annotated[Union[BuiltinSource, ImageFolderSource, TextFilesSource, TableSource], Field(discriminator="kind")]


class AugmentSpec(Strict):
    """Offline augmentation of accepted *train* images (never val): ``copies`` extra rows per image, each
    marked ``augmented_from=<id>``, drawn from a generator seeded by (id, copy, seed): same input, same rows."""

    copies: int = Field(0, ge=0, le=32)
    hflip: bool = False  # mirror with probability 1/2 (off by default: it changes digits and text)
    rotate_degrees: float = Field(0.0, ge=0, le=180)  # uniform in [-d, d]
    crop_scale: float = Field(1.0, gt=0, le=1)  # random resized crop keeping at least this share of the area
    color_jitter: float = Field(0.0, ge=0, lt=1)  # brightness and contrast factors in [1 - j, 1 + j]
    noise_std: float = Field(0.0, ge=0, le=128)  # Gaussian pixel noise, in 0..255 units
    seed: int = 0


class PreprocessSpec(Strict):
    resolution: int = 32
    channels: Literal[1, 3] = 1
    dedup: bool = True  # exact duplicates (same content hash) become rejects with duplicate_of=<id>
    near_dedup: bool = False  # also near duplicates: images by perceptual hash, texts by normalised form
    near_dedup_bits: int = Field(4, ge=0, le=16)  # images: largest Hamming distance of 64-bit dHashes;
    #   tune per dataset: on the upscaled 8x8 digits even 2 bits merges 688 of 1,615 different digits
    augment: "AugmentSpec" = Field(default_factory=lambda: AugmentSpec())
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    min_text_chars: int = Field(20, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    max_text_tokens: Optional[int] = Field(None, ge=1)  # UTF-8 bytes: the byte-level GPT's tokens
    blocklist: list[str] = Field(default_factory=list)  # whole-word, case-insensitive; hits are blocked_term rejects
    max_pixels: int = Field(64_000_000, ge=1)  # larger images are decompression_bomb rejects, never decoded
    min_side: int = Field(8, ge=1)  # shorter side in pixels, before resizing
    max_aspect: float = Field(4.0, ge=1.0)  # long side / short side
    fit: Literal["center-crop", "pad", "resize"] = "center-crop"
    background: Literal["white", "black"] = "white"  # for transparency and padding
    split_salt: str = "v1"  # changing it reshuffles the train/val split
    max_reject_share: Optional[float] = Field(None, ge=0, le=1)  # error budget: more rejects than this share of
    #   the inputs fails the run and publishes nothing (the message names the top reasons); null: no budget

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 8 or v > 512 or v & (v - 1):
            raise ValueError("must be a power of two between 8 and 512")
        return v


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
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in extra.items():
            try:
                TypeAdapter(_resolve_type(hints[key])).validate_python(value, strict=False)
            except ValidationError as exc:
                raise ValueError(f"'{key}': {exc.errors()[0]['msg']}") from None
        return self

    @property
    def modality(self) -> str:
        return aigc_models.FAMILIES[self.family].modality

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _resolve_type(hint: Any) -> Any:
    if not isinstance(hint, str):
        return hint
    return eval(hint, {"list": list, "dict": dict, "tuple": tuple, "int": int, "float": float, "str": str, "bool": bool})  # noqa: S307 - dataclass annotations of our own families


class TrainSpec(Strict):
    num_workers: int = Field(2, ge=1)
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
    cache_dataset: bool = True  # decode the split once into Ray's object store (on the driver when it is small)
    #                              instead of every epoch; turn off
    #                              for splits larger than the object store (they then stream from Parquet each epoch)
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


class RequestSpec(Strict):
    """A brief: ``per_label`` images of each label (all classes when ``labels`` is omitted), or
    ``per_prompt`` texts for each prompt. Sampler keys override the model's defaults."""

    model: str
    id: Optional[str] = None  # request id; default: the request's position in the list
    labels: Optional[list[str]] = None
    per_label: Optional[int] = Field(None, ge=1)
    prompts: Optional[list[str]] = None
    per_prompt: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_new_tokens: Optional[int] = Field(None, ge=1)
    stop: Optional[list[str]] = None
    steps: Optional[int] = Field(None, ge=1)  # ddpm: DDIM steps
    eta: Optional[float] = Field(None, ge=0, le=1)  # ddpm: 0 deterministic DDIM, 1 DDPM-like noise
    guidance: Optional[float] = Field(None, ge=0)  # ddpm: classifier-free guidance scale
    batched: Optional[bool] = None  # text models: decode a batch together (faster on GPU; see TextModel.sample)
    chunk: Optional[int] = Field(None, ge=1)  # image models: rows per network call (fixed shape; raise on a GPU)

    @model_validator(mode="after")
    def _one_kind(self) -> "RequestSpec":
        if (self.per_label is None) == (self.per_prompt is None):
            raise ValueError("give exactly one of per_label (images) or per_prompt (texts)")
        if self.per_prompt is not None and not self.prompts:
            raise ValueError("per_prompt needs a non-empty 'prompts' list")
        return self

    def sampler_overrides(self) -> dict[str, Any]:
        keys = ("temperature", "top_k", "top_p", "max_new_tokens", "stop", "steps", "eta", "guidance", "batched", "chunk")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class RequestTableSpec(Strict):
    """A table of briefs, one row per brief: ``request_id``, ``model``, ``count``, ``label`` (image models) or
    ``prompt`` (text models), optional sampler columns (``temperature``, ``steps``, ...); every other column
    is passed through, with its type, to each row generated for that brief."""

    path: str  # Parquet (file or folder), CSV or JSONL; local or URI
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"


class FilterSpec(Strict):
    """Quality filters on generated rows; a row that fails one is written to ``rejects/generated/`` with the
    reason code, never dropped. The image references (a label classifier and the training images' pixels)
    are built by ``train`` next to each image model; a threshold left ``null`` turns its check off."""

    enabled: bool = True
    min_label_confidence: Optional[float] = Field(0.5, ge=0, le=1)  # low_label_confidence: the classifier's
    #   probability that a conditional image shows the requested label
    near_copy: bool = True  # near_copy: closer to a training image than all but 1% of held-out real images are
    near_copy_distance: Optional[float] = Field(None, ge=0)  # override that threshold (RMS pixel distance, 0..1)
    min_contrast: Optional[float] = Field(0.02, ge=0)  # blank_image: pixel std / 127.5 below this
    min_chars: int = Field(1, ge=0)  # too_short: generated characters, without the prompt
    max_chars: Optional[int] = Field(None, ge=1)  # too_long
    max_repetition: Optional[float] = Field(0.5, ge=0, le=1)  # repetitive: share of word 3-grams seen earlier
    max_training_overlap: Optional[float] = Field(0.8, ge=0, le=1)  # training_copy: share of the text's
    #   24-character shingles found in the training texts
    blocklist: list[str] = Field(default_factory=list)  # blocked_term: whole word, case-insensitive
    top_up: bool = True  # generate replacements until every request has its count
    top_up_rounds: int = Field(3, ge=1, le=20)  # at most this many extra rounds; a shortfall left is reported
    max_reject_share: Optional[float] = Field(None, ge=0, le=1)  # error budget: more rejected rows than this share
    #   of the rows generated (top-ups included) fails the night and publishes nothing; null: no budget


class GenerateSpec(Strict):
    batch_size: int = Field(64, ge=1)  # rows per model call; never changes a row's output
    concurrency: Union[int, tuple[int, int]] = 2  # generator actors: a fixed pool, or [min, max] to autoscale
    encode_concurrency: Union[int, tuple[int, int]] = (1, 2)  # CPU actors that PNG-encode, score and filter
    max_file_bytes: int = Field(256 * 2**20, ge=2**10)  # Parquet files are cut by bytes, not rows
    row_group_bytes: int = Field(128 * 2**20, ge=2**10)  # and so are their row groups (binary offsets stay < 2 GiB)
    filters: FilterSpec = Field(default_factory=lambda: FilterSpec())
    use_gpu: bool = False
    num_gpus_per_actor: float = Field(1.0, gt=0)  # only with use_gpu
    resources_per_actor: dict[str, float] = Field(default_factory=dict)  # extra Ray resources per Generator actor:
    #   custom node resources ({"a100": 1}) or accelerator types ({"accelerator_type:A10G": 0.01}); see jobs/capacity.py
    actor_start_timeout_s: int = Field(300, ge=1)  # a pool whose actors cannot all start by then fails the night
    #   (the cluster fits them, but other work holds the resources); a pool the cluster can never fit fails at once
    requests: list[RequestSpec] = Field(default_factory=list)
    request_tables: list[RequestTableSpec] = Field(default_factory=list)

    @field_validator("concurrency", "encode_concurrency")
    @classmethod
    def _pool(cls, v: Any) -> Any:
        sizes = (v, v) if isinstance(v, int) else tuple(v)
        if sizes[0] < 1 or sizes[1] < sizes[0]:
            raise ValueError("give a pool size >= 1 or [min, max] with 1 <= min <= max")
        return v

    def pool(self, which: str = "concurrency") -> tuple[int, int, int]:
        """(min, max, initial) actors; the pool starts at its full size (Ray Data otherwise begins with the
        minimum and hands the first blocks to whichever actor is ready, so one actor does the early work)."""
        v = getattr(self, which)
        lo, hi = (v, v) if isinstance(v, int) else v
        return lo, hi, hi


class MixSpec(Strict):
    """``aigc augment``: a classifier's training set that mixes curated real rows with published synthetic rows.

    Real rows come from the curated ``train`` split by default. ``val`` stays out because it is held out: the
    generators never trained on it, so it is the one set of real rows a classifier trained on the mixture can
    still be evaluated on honestly; ``split: all`` mixes it in anyway. Rows are picked by a hash of
    (``seed``, id), never by row order: the same inputs and settings give the same rows."""

    synthetic_ratio: float = Field(0.5, ge=0, le=1)  # share of synthetic rows in the output (per label with per_label)
    balance: Literal["none", "per_label"] = "none"  # per_label: every label gets the same number of rows,
    #   as many as the scarcest label allows at this ratio; none: as many rows as the ratio allows
    dates: Optional[list[str]] = Field(None, min_length=1)  # generated partitions (default: --date, else the latest)
    models: Optional[list[str]] = Field(None, min_length=1)  # only synthetic rows of these models (default: all)
    labels: Optional[list[str]] = Field(None, min_length=1)  # only rows with these labels (default: all)
    modality: Literal["image", "text"] = "image"
    split: Literal["train", "val", "all"] = "train"  # curated split(s) the real rows come from
    dataset_version: Optional[str] = None  # curated version (default: the latest published)
    seed: int = 0
    max_rows: Optional[int] = Field(None, ge=1)  # cap on the output's rows (the ratio still holds)

    @field_validator("dates")
    @classmethod
    def _iso_dates(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from datetime import date

        for d in v or []:
            try:
                date.fromisoformat(str(d))
            except ValueError:
                raise ValueError(f"expected dates as YYYY-MM-DD, got {d!r}") from None
        return None if v is None else sorted({str(d) for d in v})

    @field_validator("dates", "labels", mode="before")
    @classmethod
    def _as_strings(cls, v: Any) -> Any:  # YAML reads `labels: [0, 1]` as ints and unquoted dates as dates
        return [str(x) for x in v] if isinstance(v, list) else v


class CardSpec(Strict):
    """The dataset cards (``ROOT/README.md`` and each dataset root's ``.huggingface.yaml``), rewritten on every
    publish. ``license`` is a Hugging Face license id (``cc-by-4.0``, ``apache-2.0``, ...); ``other`` until
    the team decides, and the card says so."""
    license: str = Field("other", min_length=1, pattern=r"^[a-z0-9][a-z0-9.+-]*$")
    pretty_name: Optional[str] = Field(None, min_length=1)
    tags: list[str] = Field(default_factory=list)  # added to synthetic, ai-generated


class ScheduleSpec(Strict):
    cron: str = "0 2 * * *"  # in ``timezone``: one run per local day across DST changes (a skipped 02:00 runs an
    timezone: str = "UTC"    #   hour early that day; a repeated 01:30 runs once)
    overlap: Literal["queue", "cancel"] = "queue"  # a scheduled night that finds the last one still running

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5 or not all(re.fullmatch(r"[\d*/,\-A-Za-z?]+", p) for p in v.split()):
            raise ValueError("must be a five-field cron expression such as '0 2 * * *'")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown timezone {v!r}") from None
        return v


# Gate figures and which way is better; ``absolute`` bounds are maxima for "lower" and minima for "higher".
GATE_METRICS = {
    "fd": "lower", "kid": "lower", "conditional_accuracy": "higher", "precision": "higher", "recall": "higher",
    "memorisation_rate": "lower", "augmentation_lift": "higher",
    "perplexity": "lower", "distinct_1": "higher", "distinct_2": "higher", "self_similarity": "lower", "copy_rate": "lower",
}


class LiftSpec(Strict):
    """The augmentation-lift figure: held-out accuracy of a small classifier trained on ``k_per_label`` real
    rows per label plus ``synthetic_per_label`` of tonight's rows, minus the same classifier on the real rows only."""

    enabled: bool = True
    k_per_label: int = Field(10, ge=1)
    synthetic_per_label: int = Field(50, ge=1)
    steps: int = Field(200, ge=1)  # optimiser steps of each classifier, whatever its training-set size
    seed: int = 0


class GateSpec(Strict):
    """The nightly quality gate. A candidate model is promoted only if its evaluation passes; tonight's output
    is published only if its figures pass. ``absolute`` bounds a figure (a maximum for lower-is-better figures
    such as ``fd``, a minimum for higher-is-better ones such as ``conditional_accuracy``); ``relative`` is the
    worsening tolerated against the baseline (the production model's evaluation for a candidate; the last
    published night's figures for tonight's output) as a fraction of the baseline's value."""

    enabled: bool = True
    samples_per_label: int = Field(50, ge=2)  # images per label sampled to evaluate a candidate image model
    text_samples: int = Field(48, ge=2)  # texts sampled to evaluate a candidate text model
    val_texts: int = Field(256, ge=1)  # held-out documents for perplexity
    max_rows: int = Field(2000, ge=10)  # rows per model of tonight's output scored by the gate (even stride)
    copy_overlap: float = Field(0.5, gt=0, le=1)  # copy_rate counts texts with more of their shingles in training
    absolute: dict[str, float] = Field(default_factory=lambda: {
        "conditional_accuracy": 0.5, "memorisation_rate": 0.2, "copy_rate": 0.5})
    relative: dict[str, float] = Field(default_factory=lambda: {
        "fd": 0.5, "conditional_accuracy": 0.1, "perplexity": 0.25, "distinct_2": 0.25})
    lift: LiftSpec = Field(default_factory=lambda: LiftSpec())

    @field_validator("absolute", "relative")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in GATE_METRICS:
                raise ValueError(f"unknown figure {name!r} (known: {', '.join(GATE_METRICS)})")
        return v

    @field_validator("relative")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        for name, tol in v.items():
            if tol < 0:
                raise ValueError(f"{name}: a tolerated worsening is a fraction >= 0, got {tol}")
        return v
