"""The one config loader: YAML file -> ``--set`` overrides -> validated ``PipelineConfig``.

Every error is a ``ConfigError`` whose one-line message names the dotted key (``train.epochs``,
``models.0.family``), so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

import aigc_models
from jobs.data.spec import PreprocessSpec, Source
from jobs.gate.spec import GateSpec
from jobs.generate.spec import GenerateSpec
from jobs.mix.spec import MixSpec
from jobs.runtime.spec import NAME_RE, BudgetSpec, RaySpec, Strict
from jobs.store.spec import CardSpec, SecuritySpec, SigningSpec
from jobs.train.spec import ModelSpec, TrainSpec

SOURCE_KINDS = ("builtin", "image_folder", "text_files", "table")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


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


class ConfigError(ValueError):
    """A bad config or argument; the message is one line that names the key."""


class PipelineConfig(Strict):
    name: str = Field(pattern=NAME_RE)
    output: str = "./runs"  # ROOT: a local folder or a pyarrow filesystem URI (s3://bucket/prefix)
    ray: RaySpec = RaySpec()
    sources: list[Source] = Field(min_length=1)
    preprocess: PreprocessSpec = PreprocessSpec()
    models: list[ModelSpec] = Field(default_factory=list)
    train: TrainSpec = TrainSpec()
    generate: GenerateSpec = GenerateSpec()
    augment: MixSpec = MixSpec()  # `aigc augment`: real + synthetic rows for a classifier
    gate: GateSpec = GateSpec()  # the nightly quality gate (model promotion and publishing)
    schedule: ScheduleSpec = ScheduleSpec()
    card: CardSpec = CardSpec()  # the dataset cards: license, name, tags
    security: SecuritySpec = SecuritySpec()
    signing: SigningSpec = SigningSpec()  # Content Credentials on published content (docs/provenance.md)
    budget: BudgetSpec = BudgetSpec()  # what one night may cost (CPU-/GPU-hours reserved, wall time)

    @model_validator(mode="after")
    def _paths_under_allowed_roots(self) -> "PipelineConfig":
        """With ``security.allowed_roots`` set, every path the config names is checked before any I/O."""
        import glob

        from jobs.store.paths import PathNotAllowed, glob_root

        policy = self.security.policy()
        if not policy.restricted:
            return self
        named = [("output", self.output)] + [(f"sources.{i}.path", s.path) for i, s in enumerate(self.sources)
                                             if hasattr(s, "path")]
        named += [(f"generate.request_tables.{i}.path", t.path) for i, t in enumerate(self.generate.request_tables)]
        for key, path in named:
            if glob.has_magic(path) and "://" not in path:  # a glob: its fixed leading folders
                path = glob_root(path)
            try:
                policy.check(path, key)
            except PathNotAllowed as exc:
                raise _KeyError(key, str(exc).split(": ", 1)[1]) from None
        return self

    @model_validator(mode="after")
    def _cross_references(self) -> "PipelineConfig":
        ids = [s.source_id for s in self.sources]
        for i, source_id in enumerate(ids):
            if source_id in ids[:i]:
                raise _KeyError(f"sources.{i}", f"the same source is listed twice ({source_id})")
        names = [m.name for m in self.models]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _KeyError(f"models.{i}.name", f"duplicate model name {name!r}")
        for i, req in enumerate(self.generate.requests):
            if req.model not in names:
                raise _KeyError(f"generate.requests.{i}.model", f"no model named {req.model!r} in models ({', '.join(names) or 'none'})")
        return self

    @model_validator(mode="after")
    def _images_fit_pretrained_models(self) -> "PipelineConfig":
        """A pretrained image model's weights fix its image shape (a U-Net's ``sample_size`` and channels), so
        preprocessing must make images of that shape: checked here, before any work, whenever the model's
        directory can be read (training checks the curated data itself again)."""
        for i, m in enumerate(self.models):
            fixed = getattr(aigc_models.FAMILIES[m.family], "fixed_output_shape", None)
            try:
                shape = fixed(m.hyperparameters) if fixed else None
            except (ValueError, OSError, KeyError) as exc:  # an unreadable or unusable saved config
                raise _KeyError(f"models.{i}.path", f"{type(exc).__name__}: {exc}") from None
            if shape is None:
                continue
            h, w, c = shape
            what = f"model {m.name} ({m.family}), which makes {h}x{w} images with {c} channel{'s' if c > 1 else ''}"
            if h != w:
                raise _KeyError(f"models.{i}.path", f"model {m.name} ({m.family}) makes {h}x{w} images; preprocessing makes "
                                                    "square images only")
            if h != self.preprocess.resolution:
                raise _KeyError("preprocess.resolution", f"{self.preprocess.resolution} does not fit {what}: "
                                                         f"set preprocess.resolution: {h}")
            if c != self.preprocess.channels:
                raise _KeyError("preprocess.channels", f"{self.preprocess.channels} does not fit {what}: "
                                                       f"set preprocess.channels: {c}")
        return self

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"--model: no model named {name!r} in the config (have: {', '.join(m.name for m in self.models)})")


class _KeyError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                output: str | None = None) -> PipelineConfig:
    """Reads ``path`` (default: ``configs/demo.yaml``), applies ``key=value`` overrides, validates."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # PyYAML builds dates and times itself: 2026-13-01 raises from datetime
        raise ConfigError(f"--config: {path} has a value YAML reads as an impossible date or time: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys, not {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    if output:
        data["output"] = output
    return validate(data)


def validate(data: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem as ``dotted.key: message``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if p not in SOURCE_KINDS]  # drop the union's tag from the path
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    head = msg.split(":", 1)[0]
    if head in PipelineConfig.model_fields or (head.count(".") and head.replace(".", "").replace("_", "").isalnum()):
        return msg  # already names its own key (cross-reference and path checks)
    if msg.startswith("unknown key '") or msg.startswith("'"):  # model hyperparameter checks name the key
        key = msg.split("'")[1]
        return f"{'.'.join(loc + [key])}: {msg}"
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


def apply_override(data: dict[str, Any], item: str) -> None:
    """``a.b.0.c=value``: the value is parsed as YAML (``3`` is an int, ``[a, b]`` a list, ``null`` None)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an impossible date such as 2026-13-01; the key's check names it
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {where} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")


def as_dict(config: PipelineConfig) -> dict[str, Any]:
    """A JSON-able form (what Prefect flows take as their parameter)."""
    return config.model_dump(mode="json", exclude_none=False)
