"""The Prefect tasks: each one stage's job on Ray (``jobs``), with its name, retries and caching declared here.

Tasks take the validated ``PipelineConfig`` (validated once, where the flow was called) and pass back small typed
results (versions, paths, counts): never tensors or DataFrames. No task calls another task; the flows
(``pipelines.flows``) say in which order they run. Stages cached per night (reading the sources, curating,
training) key on the output ROOT's identity, the config sections they read, their inputs and the night: a re-run
of a night that failed later skips them; ``--refresh`` recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import timedelta
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from jobs.data.curate import PreprocessResult, run_preprocess
from jobs.data.curated import verify_curated
from jobs.data.sources import stage_source, staged_units
from jobs.gate import figures, policy
from jobs.gate.policy import GateVerdict, Promotion
from jobs.generate.manifest import GenerateResult, publish_night
from jobs.generate.run import run_generation
from jobs.runtime import faults, progress
from jobs.runtime.cluster import ensure_ray
from jobs.store import layout, registry
from jobs.store.cards import write_cards
from jobs.store.credentials import Signer, load_signer
from jobs.store.storage import Store
from jobs.train.policy import retrain_reason
from jobs.train.run import TrainResult, run_training

from .config import PipelineConfig
from .report import headline, write_report

CACHE_EXPIRATION = timedelta(hours=20)  # a re-run of a failed night reuses stages that succeeded; the next night does not
CACHE_VERSION = 2  # bump when a cached stage's result changes shape: older cache entries are then never hit


def open_store(cfg: PipelineConfig) -> Store:
    """ROOT of this config, in the current layout, with Ray up (each task may run in a process of its own)."""
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.listen, cfg.ray.dashboard, cfg.ray.autoscaling)
    return layout.open_root(cfg.output)


def signer_for(cfg: PipelineConfig) -> Optional[Signer]:
    """Who signs this config's published content: its chain, the development chain (made on first use), or
    nobody (``signing.enabled: false``). A chain that cannot be used raises ``CredentialError`` naming the key."""
    s = cfg.signing
    if not s.enabled:
        return None
    return load_signer(s.certificate, s.private_key, s.trust_anchors, s.algorithm, s.timestamp_url, say=progress.say)


def warn(message: str) -> None:
    """A warning a person must act on: in the Prefect run's log and on the console."""
    get_run_logger().warning(message)
    progress.say(message, logging.WARNING)


def refresh_cards(cfg: PipelineConfig, store: Store) -> None:
    """Rewrites the dataset cards after a publish. The data is already published: a card that cannot be written
    is a warning, not a failed stage."""
    try:
        write_cards(store, cfg.card, cfg.name)
    except (OSError, ValueError, KeyError) as exc:
        warn(f"dataset card not rewritten: {type(exc).__name__}: {exc}")


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups and lost workers; a bad input or config fails at once, with its one message."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (ValueError, FileNotFoundError, KeyError, AssertionError, NotADirectoryError))


RETRY_DELAYS = [int(x) for x in os.environ.get("AIGC_RETRY_DELAYS", "5,30").split(",")]  # seconds before retry 1, 2
RETRIES = {"retries": len(RETRY_DELAYS), "retry_delay_seconds": RETRY_DELAYS, "retry_condition_fn": retry_transient}


def night_key(kind: str, cfg: PipelineConfig, *parts: Any) -> str:
    """A stage's cache key: the output ROOT, the config sections the stage reads, its inputs, the night. Prefect's
    cache outlives a ROOT, so the ROOT counts by ``Store.identity``: with the relative ``output: ./runs`` a second
    checkout, or the same one after ``make clean``, must not hit the cache of data that is not there."""
    payload = json.dumps([CACHE_VERSION, kind, *Store(cfg.output).identity(), *parts], sort_keys=True, default=str)
    return f"aigc-{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _read_key(context: Any, p: dict[str, Any]) -> Optional[str]:
    cfg = p["cfg"]
    return None if p["run_date"] is None else night_key(  # its files lie in the staging folder: a new one reads again
        "read", cfg, _dump(cfg.sources[p["index"]]), p["index"], _dump(cfg.security), p["staging"], p["run_date"])


def _curate_key(context: Any, p: dict[str, Any]) -> Optional[str]:
    cfg = p["cfg"]
    return None if p["run_date"] is None else night_key(
        "curate", cfg, [_dump(s) for s in cfg.sources], _dump(cfg.preprocess), p["run_date"])


def _train_key(context: Any, p: dict[str, Any]) -> Optional[str]:
    cfg = p["cfg"]
    return None if p["run_date"] is None else night_key(
        "train", cfg, _dump(cfg.model(p["model_name"])), _dump(cfg.train), p["dataset_version"], p["run_date"], p["promote"])


_CACHED = {"cache_expiration": CACHE_EXPIRATION, "persist_result": True}  # cached only with a run date (a night)


@task(name="read-source", task_run_name="read-{source_id}", cache_key_fn=_read_key, **_CACHED, **RETRIES)
def read_source_task(cfg: PipelineConfig, index: int, source_id: str, staging: str, run_date: Optional[str] = None) -> int:
    """One source's raw units into ``staging`` (a night's are cached with the files they wrote)."""
    n = stage_source(cfg.sources[index], index, open_store(cfg), staging, cfg.security.policy())
    get_run_logger().info("%s: %d input units", source_id, n)
    return n


@task(name="curate", task_run_name="curate-{run_date}", cache_key_fn=_curate_key, **_CACHED, **RETRIES)
def curate_task(cfg: PipelineConfig, staging: str, run_date: Optional[str] = None,
                expected: Optional[list[int]] = None) -> PreprocessResult:
    """Clean, deduplicate, split, version and publish the staged units (``expected``: how many each read task
    staged), then check the files against the manifest."""
    store = open_store(cfg)
    for i, n in enumerate(expected or []):
        if staged_units(store, staging, i) != n:  # a cached read whose files are gone: never curate part of the data
            raise FileNotFoundError(f"sources.{i}: {n:,} units were read, {staged_units(store, staging, i):,} are staged in "
                                    f"{store.display(staging)}; run the night again with --refresh")
    result = run_preprocess(cfg.sources, cfg.preprocess, store, staging)
    verify_curated(store, result.dataset_version)
    refresh_cards(cfg, store)
    c = result.counts
    rows = "\n".join(f"| {k} | {v['inputs']:,} | {v['accepted']:,} | {v['rejected']:,} |" for k, v in c["by_source"].items())
    reasons = "\n".join(f"| {k} | {v:,} |" for k, v in c["by_reason"].items()) or "| none | 0 |"
    create_markdown_artifact(
        key="curated-dataset", description="What preprocessing accepted and quarantined",
        markdown=f"## Curated dataset `{result.dataset_version}`\n\n{result.path}\n\n"
                 f"inputs {c['inputs']:,} = accepted {c['accepted']:,} (train {c['train']:,}, val {c['val']:,}) "
                 f"+ rejected {c['rejected']:,}\n\n| source | inputs | accepted | rejected |\n|---|---|---|---|\n{rows}\n\n"
                 f"| reject reason | rows |\n|---|---|\n{reasons}\n")
    get_run_logger().info("curated %s: %s accepted, %s rejected%s", result.dataset_version, c["accepted"],
                          c["rejected"], " (unchanged, reused)" if result.reused else "")
    return result


@task(name="retrain?", task_run_name="retrain?-{model_name}")
def retrain_task(cfg: PipelineConfig, model_name: str, dataset_version: str, run_date: str) -> Optional[str]:
    """Why tonight trains ``model_name`` (None: its production version is up to date and generates tonight)."""
    return retrain_reason(open_store(cfg), cfg.model(model_name), cfg.train, dataset_version, run_date)


@task(name="train", task_run_name="train-{model_name}", cache_key_fn=_train_key, **_CACHED, **RETRIES)
def train_task(cfg: PipelineConfig, model_name: str, dataset_version: Optional[str] = None, fresh: bool = False,
               promote: Optional[str] = None, run_date: Optional[str] = None) -> TrainResult:
    """A retry (or the next `aigc train`) resumes the interrupted Ray Train run from its latest checkpoint; a
    night's run is cached, so a re-run of a night that failed after training finds the candidate it trained."""
    result = run_training(cfg.model(model_name), cfg.train, open_store(cfg), dataset_version, fresh=fresh, promote=promote)
    get_run_logger().info("%s %s: %d steps in %.1fs", model_name, result.model.version, result.steps, result.seconds)
    return result


def _figures_line(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items()) or "no figures"


def _device(cfg: PipelineConfig) -> dict[str, Any]:
    return {"device": "cuda" if cfg.generate.use_gpu else "cpu", "gpus": cfg.generate.num_gpus_per_actor}


@task(name="evaluate", task_run_name="evaluate-{model_name}-{version}", **RETRIES)
def evaluate_task(cfg: PipelineConfig, model_name: str, version: str) -> dict[str, Any]:
    """A version's gate figures on a fixed seed set (computed once per version and evaluation settings)."""
    store = open_store(cfg)
    prompts = sorted({p for r in cfg.generate.requests if r.model == model_name for p in (r.prompts or [])}) or None
    result = figures.evaluate_version(store, registry.resolve(store, model_name, version), cfg.model(model_name).sources,
                                      cfg.gate, prompts, **_device(cfg))
    get_run_logger().info("%s %s: %s", model_name, version, _figures_line(result["figures"]))
    return result


@task(name="promote", task_run_name="promote-{model_name}")
def promote_task(cfg: PipelineConfig, model_name: str, version: str, final_metrics: dict[str, float],
                 evaluation: Optional[dict[str, Any]], baseline: Optional[dict[str, Any]]) -> Promotion:
    """The candidate becomes production only if the gate's verdict on it (``jobs.gate.policy``) is clean;
    otherwise production stays where it was and tonight generates with it."""
    verdict = policy.judge_candidate(model_name, version, final_metrics, evaluation["figures"] if evaluation else None,
                                     baseline, cfg.gate)
    if verdict.promoted:
        registry.promote_version(open_store(cfg), model_name, version)
    else:
        warn(f"{model_name} {version} not promoted: {'; '.join(verdict.failures)}")
    return verdict


@task(name="generate", **RETRIES)
def generate_task(cfg: PipelineConfig, run_date: str, count: Optional[int] = None, publish_now: bool = True,
                  force: bool = False) -> GenerateResult:
    store = open_store(cfg)
    result = run_generation(cfg.generate, store, run_date, cfg.name, count=count, publish_now=publish_now, force=force,
                            signer=signer_for(cfg))
    if faults.fire(faults.plan(), "generate-after-staging"):  # the reliability suite: a failure after the side effect
        raise ConnectionError("injected fault after generation wrote its rows (the retry must not write them again)")
    if result.reused:
        get_run_logger().info("%s is already published from this exact work; nothing regenerated", run_date)
        return result
    if result.staging is None:  # published now (no gate)
        refresh_cards(cfg, store)
    get_run_logger().info("generated %d rows (%d rejected) for %s at %.1f rows/s%s", result.rows, result.rejected,
                          run_date, result.rows_per_second, "" if publish_now else " (staged for the gate)")
    return result


@task(name="gate", **RETRIES)
def gate_task(cfg: PipelineConfig, staged: GenerateResult) -> GateVerdict:
    """Tonight's output, per model, against the absolute bounds and the last published night's figures."""
    store = open_store(cfg)
    models = {name: (registry.resolve(store, name, m["version"]), cfg.model(name).sources)
              for name, m in staged.manifest["models"].items()}
    results = figures.evaluate_night(store, staged.staging, models, cfg.gate, **_device(cfg))
    for name, r in results.items():
        get_run_logger().info("%s tonight: %s", name, _figures_line(r["figures"]))
    return policy.judge_night(results, store, staged.run_date, cfg.gate)


@task(name="publish")
def publish_task(cfg: PipelineConfig, staged: GenerateResult, gate: Optional[GateVerdict],
                 cost: Optional[dict[str, Any]] = None) -> GenerateResult:
    """Publishes a staged night whole, its manifest with the gate's verdict and what the night cost so far."""
    store = open_store(cfg)
    extra = {**({"gate": gate.as_dict()} if gate else {}), **({"cost": cost} if cost else {})}
    result = publish_night(store, staged, extra or None, signer_for(cfg))
    refresh_cards(cfg, store)
    get_run_logger().info("published %s (%d rows)", result.path, result.rows)
    return result


@task(name="report")
def report_task(cfg: PipelineConfig, night: dict[str, Any], rows_path: Optional[str]) -> str:
    """The night's HTML report, and its headline figures as Prefect artifacts on the flow run."""
    path = write_report(open_store(cfg), night, rows_path)
    markdown, table = headline(night)
    create_markdown_artifact(key="nightly-report", markdown=f"{markdown}\n\nReport: `{path}`",
                             description=f"Night {night['run_date']} of {cfg.name}")
    if table:
        create_table_artifact(key="nightly-figures", table=table, description=f"Gate figures, {night['run_date']}")
    return path

