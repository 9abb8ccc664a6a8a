"""Config sections of generation: the requests (briefs in the config or in tables), the row filters and how
the Ray Data job is sized."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from jobs.runtime.spec import Strict

# The sampler settings a request (or a request table's column) may set; each model family says which it takes
# (its ``sampler_defaults``) and every row records the ones it was sampled with.
SAMPLER_KEYS = ("temperature", "top_k", "top_p", "max_new_tokens", "stop", "steps", "eta", "guidance", "batched", "chunk",
                "repetition_penalty", "heal", "prior")

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
    repetition_penalty: Optional[float] = Field(None, gt=0)  # text models: >1 makes a row's used tokens less likely
    heal: Optional[bool] = None  # text models: token healing of the prompt's last token (default true)
    prior: Optional[Literal["fitted", "standard"]] = None  # VAEs: the latent distribution fitted to the training
    #   images (default, once fitted) or N(0, I)

    @model_validator(mode="after")
    def _one_kind(self) -> "RequestSpec":
        if (self.per_label is None) == (self.per_prompt is None):
            raise ValueError("give exactly one of per_label (images) or per_prompt (texts)")
        if self.per_prompt is not None and not self.prompts:
            raise ValueError("per_prompt needs a non-empty 'prompts' list")
        return self

    def sampler_overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SAMPLER_KEYS if getattr(self, k) is not None}


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
    concurrency: Union[int, tuple[int, int]] = 2  # generator actors: a fixed pool, or [min, max] to autoscale; without
    #   use_gpu each samples and finishes its rows in one process (one CPU each)
    encode_concurrency: Union[int, tuple[int, int]] = (1, 2)  # with use_gpu: CPU actors that PNG-encode, score,
    #   filter and write the GPU actors' rows (unused without use_gpu)
    max_file_bytes: int = Field(256 * 2**20, ge=2**10)  # Parquet files are cut by bytes, not rows (the first
    #   ones are a model call's rows, so rows land within seconds; later ones grow to this)
    row_group_bytes: int = Field(128 * 2**20, ge=2**10)  # and so are their row groups (binary offsets stay < 2 GiB)
    filters: FilterSpec = Field(default_factory=lambda: FilterSpec())
    use_gpu: bool = False
    num_gpus_per_actor: float = Field(1.0, gt=0)  # only with use_gpu
    resources_per_actor: dict[str, float] = Field(default_factory=dict)  # extra Ray resources per Generator actor:
    #   custom node resources ({"a100": 1}) or accelerator types ({"accelerator_type:A10G": 0.01}); see jobs/runtime/capacity.py
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
