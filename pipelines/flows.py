"""Prefect flows: each stage as a flow of its own, and ``nightly`` running them in order.

Flows and tasks pass the config as a plain dict and return small summaries (versions, paths, counts):
never tensors or DataFrames. The heavy work happens in ``jobs`` on Ray.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any, Optional
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from jobs import registry
from jobs.generate import run_generation
from jobs.preprocess import run_preprocess, verify_curated
from jobs.publish import discard, staging_dir
from jobs.ray_runtime import ensure_ray
from jobs.sources import stage_source
from jobs.storage import Store
from jobs.train import run_training

from .config import PipelineConfig, validate


def _setup(config: dict[str, Any]) -> tuple[PipelineConfig, Store]:
    cfg = validate(config)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    return cfg, Store(cfg.output)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups and lost workers; a bad input or config fails at once, with its one message."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (ValueError, FileNotFoundError, KeyError, AssertionError, NotADirectoryError))


RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30], "retry_condition_fn": retry_transient}


def today(cfg: PipelineConfig) -> str:
    """Today's date in the schedule's timezone: the partition a night writes by default."""
    return datetime.now(ZoneInfo(cfg.schedule.timezone)).date().isoformat()


@task(name="read-source", task_run_name="read-{source_id}", **RETRIES)
def stage_source_task(config: dict[str, Any], index: int, source_id: str, staging: str) -> int:
    cfg, store = _setup(config)
    n = stage_source(cfg.sources[index], index, store, staging)
    get_run_logger().info("%s: %d input units", source_id, n)
    return n


@task(name="preprocess", **RETRIES)
def preprocess_task(config: dict[str, Any], staging: str) -> dict[str, Any]:
    cfg, store = _setup(config)
    result = run_preprocess(cfg.sources, cfg.preprocess, store, staging)
    verify_curated(store, result.dataset_version)  # the published files hold exactly what the manifest says
    c = result.counts
    rows = "\n".join(f"| {k} | {v['inputs']:,} | {v['accepted']:,} | {v['rejected']:,} |" for k, v in c["by_source"].items())
    reasons = "\n".join(f"| {k} | {v:,} |" for k, v in c["by_reason"].items()) or "| none | 0 |"
    create_markdown_artifact(
        key="curated-dataset",
        markdown=f"## Curated dataset `{result.dataset_version}`\n\n{result.path}\n\n"
                 f"inputs {c['inputs']:,} = accepted {c['accepted']:,} (train {c['train']:,}, val {c['val']:,}) "
                 f"+ rejected {c['rejected']:,}\n\n| source | inputs | accepted | rejected |\n|---|---|---|---|\n{rows}\n\n"
                 f"| reject reason | rows |\n|---|---|\n{reasons}\n",
        description="What preprocessing accepted and quarantined")
    get_run_logger().info("curated %s: %s accepted, %s rejected%s", result.dataset_version, result.counts["accepted"],
                          result.counts["rejected"], " (unchanged, reused)" if result.reused else "")
    return dataclasses.asdict(result)


@task(name="train", task_run_name="train-{model_name}", **RETRIES)
def train_task(config: dict[str, Any], model_name: str, dataset_version: Optional[str] = None,
               fresh: bool = False) -> dict[str, Any]:
    """A retry (or the next `aigc train`) resumes the interrupted Ray Train run from its latest checkpoint."""
    cfg, store = _setup(config)
    result = run_training(cfg.model(model_name), cfg.train, store, dataset_version, fresh=fresh)
    get_run_logger().info("%s %s: %d steps in %.1fs", model_name, result.model.version, result.steps, result.seconds)
    out = dataclasses.asdict(result)
    out["model"] = {"name": result.model.name, "version": result.model.version, "path": store.display(result.model.path)}
    return out


@task(name="promote", task_run_name="promote-{model_name}")
def promote_task(config: dict[str, Any], model_name: str, version: str) -> dict[str, Any]:
    """The nightly quality gate: tonight's version becomes production only if its final metrics are all
    finite; otherwise production stays where it was and generation uses that."""
    cfg, store = _setup(config)
    card = registry.resolve(store, model_name, version).card
    bad = sorted(k for k, v in card["final_metrics"].items() if not math.isfinite(v))
    if bad:
        get_run_logger().warning("%s %s not promoted: non-finite final metrics %s", model_name, version, ", ".join(bad))
        return {"model": model_name, "version": version, "promoted": False, "reason": f"non-finite {', '.join(bad)}"}
    registry.promote_version(store, model_name, version)
    return {"model": model_name, "version": version, "promoted": True, "reason": "final metrics finite"}


@task(name="generate", **RETRIES)
def generate_task(config: dict[str, Any], run_date: str, count: Optional[int] = None) -> dict[str, Any]:
    cfg, store = _setup(config)
    result = run_generation(cfg.generate, store, run_date, cfg.name, count=count)
    get_run_logger().info("generated %d rows (%d rejected) for %s at %.1f rows/s", result.rows, result.rejected,
                          run_date, result.rows_per_second)
    return dataclasses.asdict(result)


def _preprocess(config: dict[str, Any]) -> dict[str, Any]:
    """One task per source (read into staged raw units), then one for clean/dedup/split/publish."""
    cfg, store = _setup(config)
    staging = staging_dir(store, "curated", "raw")
    try:
        for i, source in enumerate(cfg.sources):
            stage_source_task(config, i, source.source_id, staging)
        return preprocess_task(config, staging)
    finally:
        discard(store, staging)


@flow(name="preprocess")
def preprocess_flow(config: dict[str, Any]) -> dict[str, Any]:
    return _preprocess(config)


@flow(name="train")
def train_flow(config: dict[str, Any], models: Optional[list[str]] = None,
               dataset_version: Optional[str] = None, fresh: bool = False) -> list[dict[str, Any]]:
    cfg = validate(config)
    return [train_task(config, name, dataset_version, fresh) for name in models or [m.name for m in cfg.models]]


@flow(name="generate")
def generate_flow(config: dict[str, Any], run_date: Optional[str] = None, count: Optional[int] = None) -> dict[str, Any]:
    return generate_task(config, run_date or today(validate(config)), count)


@flow(name="nightly")
def nightly_flow(config: dict[str, Any], run_date: Optional[str] = None) -> dict[str, Any]:
    """preprocess -> train every model on the new curated version -> promote those that pass the gate ->
    generate tonight's partition with the production models."""
    cfg = validate(config)
    run_date = run_date or today(cfg)
    curated = _preprocess(config)
    trained = [train_task(config, m.name, curated["dataset_version"]) for m in cfg.models]
    for t in trained:
        t["promoted"] = promote_task(config, t["model"]["name"], t["model"]["version"])["promoted"]
    generated = generate_task(config, run_date) if cfg.generate.requests or cfg.generate.request_tables else None
    return {"run_date": run_date, "preprocess": curated, "train": trained, "generate": generated}


@flow(name="nightly-from-config")
def nightly_from_config(config_path: str, run_date: Optional[str] = None,
                        overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """The nightly flow for work-pool deployments (``deploy/prefect.yaml``): the worker reads the YAML config
    shipped in its image, so a deployment's parameters stay a path and a few ``key=value`` overrides."""
    from .config import as_dict, load_config

    return nightly_flow(as_dict(load_config(config_path, overrides)), run_date)

