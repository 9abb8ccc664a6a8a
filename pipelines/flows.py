"""Prefect flows: each stage as a flow of its own, and ``nightly`` running them in order.

Flows and tasks pass the config as a plain dict and return small summaries (versions, paths, counts):
never tensors or DataFrames. The heavy work happens in ``jobs`` on Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
import ray
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from jobs import faults, layout, progress, registry
from jobs.cards import write_cards
from jobs.evaluate import check, evaluate_model_remote, evaluate_rows_remote, failures
from jobs.lease import night_lease
from jobs.generate import GenerateResult, discard_generation, publish_generation, run_generation
from jobs.preprocess import run_preprocess, verify_curated
from jobs.publish import discard, staging_dir
from jobs.ray_runtime import ensure_ray
from jobs.sources import stage_source
from jobs.storage import Store
from jobs.train import retrain_reason, run_training

from .config import PipelineConfig, as_dict, validate
from .report import headline, write_report


def _setup(config: dict[str, Any]) -> tuple[PipelineConfig, Store]:
    cfg = validate(config)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.listen, cfg.ray.dashboard, cfg.ray.autoscaling)
    return cfg, layout.open_root(cfg.output)


def _warn(message: str) -> None:
    """A warning a person must act on: in the Prefect run's log and on the console."""
    get_run_logger().warning(message)
    progress.say(message, logging.WARNING)


def refresh_cards(cfg: PipelineConfig, store: Store) -> None:
    """Rewrites the dataset cards after a publish. The data is already published: a card that cannot be
    written is a warning, not a failed stage."""
    try:
        write_cards(store, cfg.card, cfg.name)
    except (OSError, ValueError, KeyError) as exc:
        _warn(f"dataset card not rewritten: {type(exc).__name__}: {exc}")


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups and lost workers; a bad input or config fails at once, with its one message."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (ValueError, FileNotFoundError, KeyError, AssertionError, NotADirectoryError))


RETRY_DELAYS = [int(x) for x in os.environ.get("AIGC_RETRY_DELAYS", "5,30").split(",")]  # seconds before retry 1, 2
RETRIES = {"retries": len(RETRY_DELAYS), "retry_delay_seconds": RETRY_DELAYS, "retry_condition_fn": retry_transient}


def scheduled_date(cfg: PipelineConfig) -> str:
    """The partition a run without a date writes: the day its flow run was scheduled for, in the schedule's
    timezone. A night due at 23:30 that waits behind the last one (``overlap: queue``), or that a busy worker
    starts after midnight, still writes the night it was due; an ad-hoc run's scheduled time is its creation."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time.astimezone(ZoneInfo(cfg.schedule.timezone)).date().isoformat()


@task(name="read-source", task_run_name="read-{source_id}", **RETRIES)
def stage_source_task(config: dict[str, Any], index: int, source_id: str, staging: str) -> int:
    cfg, store = _setup(config)
    n = stage_source(cfg.sources[index], index, store, staging, cfg.security.policy())
    get_run_logger().info("%s: %d input units", source_id, n)
    return n


@task(name="preprocess", **RETRIES)
def preprocess_task(config: dict[str, Any], staging: str) -> dict[str, Any]:
    cfg, store = _setup(config)
    result = run_preprocess(cfg.sources, cfg.preprocess, store, staging)
    verify_curated(store, result.dataset_version)  # the published files hold exactly what the manifest says
    refresh_cards(cfg, store)
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
               fresh: bool = False, promote: Optional[str] = None) -> dict[str, Any]:
    """A retry (or the next `aigc train`) resumes the interrupted Ray Train run from its latest checkpoint."""
    cfg, store = _setup(config)
    result = run_training(cfg.model(model_name), cfg.train, store, dataset_version, fresh=fresh, promote=promote)
    get_run_logger().info("%s %s: %d steps in %.1fs", model_name, result.model.version, result.steps, result.seconds)
    out = dataclasses.asdict(result)
    out["model"] = {"name": result.model.name, "version": result.model.version, "path": store.display(result.model.path)}
    return out


@task(name="retrain?", task_run_name="retrain?-{model_name}")
def retrain_task(config: dict[str, Any], model_name: str, dataset_version: str, run_date: str) -> Optional[str]:
    """Why tonight trains ``model_name`` (None: its production version is up to date and generates tonight)."""
    cfg, store = _setup(config)
    return retrain_reason(store, cfg.model(model_name), cfg.train, dataset_version, run_date)


@task(name="evaluate", task_run_name="evaluate-{model_name}-{version}", **RETRIES)
def evaluate_task(config: dict[str, Any], model_name: str, version: str) -> dict[str, Any]:
    """A version's gate figures on a fixed seed set, kept as ``evaluation.json`` in its folder (computed once
    per version and evaluation settings)."""
    cfg, store = _setup(config)
    ref = registry.resolve(store, model_name, version)
    settings = {k: v for k, v in as_dict(cfg)["gate"].items() if k in ("samples_per_label", "text_samples", "val_texts", "copy_overlap")}
    if store.exists(ref.path, "evaluation.json"):
        saved = store.read_json(ref.path, "evaluation.json")
        if saved.get("settings") == settings:
            return saved
    spec = cfg.model(model_name)
    prompts = sorted({p for r in cfg.generate.requests if r.model == model_name for p in (r.prompts or [])}) or None
    device = "cuda" if cfg.generate.use_gpu else "cpu"
    task = evaluate_model_remote.options(num_gpus=cfg.generate.num_gpus_per_actor if cfg.generate.use_gpu else 0)
    result = ray.get(task.remote(store.root, ref.path, spec.sources, as_dict(cfg)["gate"], prompts, device))
    result["settings"] = settings
    store.write_json(result, ref.path, "evaluation.json")
    get_run_logger().info("%s %s: %s", model_name, version, _figures_line(result["figures"]))
    return result


def _figures_line(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) or "no figures"


@task(name="promote", task_run_name="promote-{model_name}")
def promote_task(config: dict[str, Any], model_name: str, version: str) -> dict[str, Any]:
    """Model promotion: the candidate becomes production only if its final training metrics are finite and,
    with the gate on, its evaluation passes the absolute bounds and the relative ones against production's
    evaluation. Otherwise production stays where it was and tonight generates with it."""
    cfg, store = _setup(config)
    card = registry.resolve(store, model_name, version).card
    out: dict[str, Any] = {"model": model_name, "version": version, "evaluation": None, "baseline": None, "checks": []}
    bad = sorted(k for k, v in card["final_metrics"].items() if not math.isfinite(v))
    problems = [f"{model_name}: non-finite final training metrics {', '.join(bad)}"] if bad else []
    if cfg.gate.enabled and not bad:
        out["evaluation"] = evaluate_task(config, model_name, version)["figures"]
        production = store.read_json("models", model_name, "production.json")["version"] \
            if store.exists("models", model_name, "production.json") else None
        if production and production != version:
            out["baseline"] = {"version": production, "figures": evaluate_task(config, model_name, production)["figures"]}
        out["checks"] = check(model_name, out["evaluation"], (out["baseline"] or {}).get("figures"), cfg.gate)
        problems += failures(out["checks"])
    out["promoted"], out["failures"] = not problems, problems
    if problems:
        _warn(f"{model_name} {version} not promoted: {'; '.join(problems)}")
    else:
        registry.promote_version(store, model_name, version)
    return out


@task(name="generate", **RETRIES)
def generate_task(config: dict[str, Any], run_date: str, count: Optional[int] = None,
                  publish_now: bool = True, force: bool = False) -> dict[str, Any]:
    cfg, store = _setup(config)
    result = run_generation(cfg.generate, store, run_date, cfg.name, count=count, publish_now=publish_now, force=force)
    if faults.fire(faults.plan(), "generate-after-staging"):  # the reliability suite: a failure after the side effect
        raise ConnectionError("injected fault after generation wrote its rows (the retry must not write them again)")
    if result.reused:
        get_run_logger().info("%s is already published from this exact work; nothing regenerated", run_date)
        return dataclasses.asdict(result)
    if result.staging is None:  # published now (no gate)
        refresh_cards(cfg, store)
    get_run_logger().info("generated %d rows (%d rejected) for %s at %.1f rows/s%s", result.rows, result.rejected,
                          run_date, result.rows_per_second, "" if publish_now else " (staged for the gate)")
    return dataclasses.asdict(result)


def output_baseline(store: Store, model_name: str, run_date: str) -> Optional[dict[str, Any]]:
    """The figures of ``model_name``'s output in the latest published night before ``run_date``."""
    for night in reversed(layout.night_manifests(store)):
        if night < run_date:
            figures = ((store.read_json(layout.generated_manifest(night)).get("gate") or {}).get("figures") or {}).get(model_name)
            if figures:
                return {"run_date": night, "figures": figures}
    return None


@task(name="gate", **RETRIES)
def gate_task(config: dict[str, Any], staged: dict[str, Any]) -> dict[str, Any]:
    """Tonight's output, per model, against the absolute bounds and the last published night's figures."""
    cfg, store = _setup(config)
    models = staged["manifest"]["models"]
    device = "cuda" if cfg.generate.use_gpu else "cpu"
    task = evaluate_rows_remote.options(num_gpus=cfg.generate.num_gpus_per_actor if cfg.generate.use_gpu else 0)
    futures = {name: task.remote(store.root, staged["staging"], name, m["path"], cfg.model(name).sources,
                                 as_dict(cfg)["gate"], device) for name, m in models.items()}
    results = {name: ray.get(f) for name, f in futures.items()}
    gate: dict[str, Any] = {"figures": {}, "baseline": {}, "checks": [], "augmentation_lift": {}, "rows": {}}
    problems = []
    for name, r in results.items():
        gate["figures"][name], gate["rows"][name] = r["figures"], r["rows"]
        if r.get("augmentation_lift"):
            gate["augmentation_lift"][name] = r["augmentation_lift"]
        if r["rows"] == 0:
            problems.append(f"{name}: no rows passed the filters")
            continue
        base = output_baseline(store, name, staged["run_date"])
        gate["baseline"][name] = base or {"run_date": None, "figures": {}}
        checks = check(name, r["figures"], (base or {}).get("figures"), cfg.gate)
        gate["checks"] += checks
        problems += failures(checks)
        get_run_logger().info("%s tonight: %s", name, _figures_line(r["figures"]))
    gate["failures"], gate["passed"] = problems, not problems
    return gate


@task(name="publish")
def publish_task(config: dict[str, Any], staged: dict[str, Any], gate: Optional[dict[str, Any]]) -> dict[str, Any]:
    cfg, store = _setup(config)
    result = publish_generation(store, GenerateResult(**staged), {"gate": gate} if gate else None)
    refresh_cards(cfg, store)
    get_run_logger().info("published %s (%d rows)", result.path, result.rows)
    return dataclasses.asdict(result)


@task(name="report")
def report_task(config: dict[str, Any], night: dict[str, Any], rows_path: Optional[str]) -> str:
    """The night's HTML report, and its headline figures as Prefect artifacts on the flow run."""
    cfg, store = _setup(config)
    path = write_report(store, night, rows_path)
    markdown, table = headline(night)
    create_markdown_artifact(key="nightly-report", markdown=f"{markdown}\n\nReport: `{path}`",
                             description=f"Night {night['run_date']} of {cfg.name}")
    if table:
        create_table_artifact(key="nightly-figures", table=table, description=f"Gate figures, {night['run_date']}")
    return path


def _preprocess(config: dict[str, Any]) -> dict[str, Any]:
    """One task per source (read into staged raw units), then one for clean/dedup/split/publish."""
    cfg, store = _setup(config)
    staging = staging_dir(store, layout.CURATED, "raw")
    try:
        for i, source in enumerate(cfg.sources):
            stage_source_task(config, i, source.source_id, staging)
        return preprocess_task(config, staging)
    finally:
        discard(store, staging)


CACHE_EXPIRATION = timedelta(hours=20)  # a re-run of a failed night reuses stages that succeeded; the next night does not


def _night_key(kind: str, config: dict[str, Any], *parts: Any) -> str:
    """A stage's cache key: the output ROOT, the config sections the stage reads, its inputs, the night.
    Prefect's cache outlives a ROOT, so the ROOT counts by ``Store.identity``: with the relative ``output:
    ./runs`` a second checkout, or the same one after ``make clean``, must not hit the cache of data that
    is not there."""
    payload = json.dumps([kind, *Store(config["output"]).identity(), *parts], sort_keys=True, default=str)
    return f"aigc-{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def _curate_key(context: Any, p: dict[str, Any]) -> str:
    return _night_key("curate", p["config"], p["config"]["sources"], p["config"]["preprocess"], p["run_date"])


def _train_key(context: Any, p: dict[str, Any]) -> str:
    c = p["config"]
    model = next(m for m in c["models"] if m["name"] == p["model_name"])
    return _night_key("train", c, model, c["train"], p["dataset_version"], p["run_date"], p.get("promote"))


@task(name="curate", task_run_name="curate-{run_date}", cache_key_fn=_curate_key, cache_expiration=CACHE_EXPIRATION, persist_result=True)
def curate_task(config: dict[str, Any], run_date: str) -> dict[str, Any]:
    """The night's preprocessing (one task per source, then clean/dedup/split/publish); cached per night, so a
    re-run of a night that failed later does not read the sources again."""
    return _preprocess(config)


@task(name="train", task_run_name="train-{model_name}", cache_key_fn=_train_key, cache_expiration=CACHE_EXPIRATION,
      persist_result=True, **RETRIES)
def nightly_train_task(config: dict[str, Any], model_name: str, dataset_version: str, run_date: str,
                       promote: Optional[str] = None) -> dict[str, Any]:
    """``train_task`` cached per (model entry, train section, dataset version, night): a re-run of a night
    that failed after training finds the candidate it already trained."""
    return train_task.fn(config, model_name, dataset_version, promote=promote)


@flow(name="preprocess")
def preprocess_flow(config: dict[str, Any]) -> dict[str, Any]:
    return _preprocess(config)


@flow(name="train")
def train_flow(config: dict[str, Any], models: Optional[list[str]] = None,
               dataset_version: Optional[str] = None, fresh: bool = False) -> list[dict[str, Any]]:
    cfg = validate(config)
    return [train_task(config, name, dataset_version, fresh) for name in models or [m.name for m in cfg.models]]


@flow(name="generate")
def generate_flow(config: dict[str, Any], run_date: Optional[str] = None, count: Optional[int] = None,
                  refresh: bool = False) -> dict[str, Any]:
    return generate_task(config, run_date or scheduled_date(validate(config)), count, force=refresh)


class NightRefused(RuntimeError):
    """Tonight's output failed the quality gate: nothing was published and production is unchanged."""


class _Stages:
    """Times each stage of a night into ``night["stages"]`` (also when the stage fails)."""

    def __init__(self, night: dict[str, Any]) -> None:
        self.night = night

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"stage": name, "seconds": None, "rows": None, "rows_per_second": None, "note": None}
        started = time.time()
        progress.say(f"{name} ...")
        try:
            yield entry
        except BaseException as exc:
            entry["note"] = f"failed: {type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            entry["seconds"] = round(time.time() - started, 2)
            if entry["rows"] is not None and entry["seconds"]:
                entry["rows_per_second"] = round(entry["rows"] / entry["seconds"], 2)
            self.night["stages"].append(entry)
            rows = f", {entry['rows']:,} rows" if entry["rows"] else ""
            progress.say(f"{name} {'failed' if (entry['note'] or '').startswith('failed') else 'done'} in "
                         f"{entry['seconds']:.1f} s{rows}")


def _models(config: dict[str, Any], cfg: PipelineConfig, curated: dict[str, Any], run_date: str,
            stage: _Stages, refresh: bool) -> list[dict[str, Any]]:
    """Train what needs training (new data, new config, or the cadence), gate each candidate, and say which
    production version every model generates with tonight."""
    store = Store(cfg.output)
    out = []
    for m in cfg.models:
        entry: dict[str, Any] = {"name": m.name, "family": m.family, "modality": m.modality, "trained": False,
                                 "candidate": None, "promoted": False, "evaluation": None, "promotion_failures": [],
                                 "train": None}
        reason = retrain_task(config, m.name, curated["dataset_version"], run_date)
        entry["decision"] = reason or "up to date: production was trained on this dataset and config"
        if reason:
            with stage(f"train:{m.name}") as st:
                trained = nightly_train_task.with_options(refresh_cache=refresh)(
                    config, m.name, curated["dataset_version"], run_date, promote="never")
                st["rows_per_second"], st["note"] = trained["samples_per_second"], f"{reason}; samples/s"
            with stage(f"evaluate:{m.name}"):
                verdict = promote_task(config, m.name, trained["model"]["version"])
            entry.update(trained=True, candidate=trained["model"]["version"], promoted=verdict["promoted"],
                         evaluation=verdict["evaluation"], promotion_failures=verdict["failures"],
                         promotion_checks=verdict["checks"], train=trained)
        entry["version"] = (store.read_json("models", m.name, "production.json")["version"]
                            if store.exists("models", m.name, "production.json") else None)
        out.append(entry)
    return out


@flow(name="nightly")
def nightly_flow(config: dict[str, Any], run_date: Optional[str] = None, refresh: bool = False) -> dict[str, Any]:
    """preprocess -> train (when the data or config changed, or on the cadence) -> evaluate and promote ->
    generate (staged) -> quality gate -> publish -> report. A night whose output fails the gate publishes
    nothing and the flow run fails with the reason; the report is written either way.

    Preprocessing and training are cached per night (``CACHE_EXPIRATION``): re-running a night that failed
    at a later stage skips them; ``refresh`` recomputes them. Generation resumes from its own staging, and a
    night already published from exactly the same work is not regenerated (``refresh`` regenerates it)."""
    cfg = validate(config)
    run_date = run_date or scheduled_date(cfg)
    with night_lease(Store(cfg.output), run_date):  # one night at a time per output root, however started
        layout.open_root(cfg.output)  # an older root is moved into the current layout, never beside a running night
        return _night(config, cfg, run_date, refresh)


def _night(config: dict[str, Any], cfg: PipelineConfig, run_date: str, refresh: bool) -> dict[str, Any]:
    night: dict[str, Any] = {"name": cfg.name, "run_date": run_date, "status": "failed", "reason": None,
                             "started_at": datetime.now(timezone.utc).isoformat(), "stages": [], "preprocess": None,
                             "models": [], "generate": None, "gate": None, "augmentation_lift": None}
    stage, started, staged, rows_path = _Stages(night), time.time(), None, None
    try:
        with stage("preprocess") as st:
            curated = curate_task.with_options(refresh_cache=refresh)(config, run_date)
            night["preprocess"], st["rows"] = curated, curated["counts"]["inputs"]
        night["models"] = _models(config, cfg, curated, run_date, stage, refresh)
        missing = [m["name"] for m in night["models"] if m["version"] is None]
        if cfg.generate.requests or cfg.generate.request_tables:
            if missing:
                raise RuntimeError(f"no production version of {', '.join(missing)} (its first version failed the gate: "
                                   f"{'; '.join(f for m in night['models'] for f in m['promotion_failures'])})")
            with stage("generate") as st:
                staged = generate_task(config, run_date, publish_now=not cfg.gate.enabled, force=refresh)
                st["rows"] = 0 if staged["reused"] else staged["manifest"]["generated"]
                st["note"] = "already published from this exact work: nothing regenerated" if staged["reused"] else None
            night["generate"], rows_path = staged["manifest"], staged["staging"] or layout.generated(run_date)
            gate = None
            if staged["reused"]:  # a re-run of a committed night: its gate verdict stands
                night["gate"] = staged["manifest"].get("gate")
                night["augmentation_lift"] = (night["gate"] or {}).get("augmentation_lift") or None
            elif cfg.gate.enabled:
                with stage("gate") as st:
                    gate = gate_task(config, staged)
                    st["rows"] = sum(gate["rows"].values())
                night["gate"], night["augmentation_lift"] = gate, gate["augmentation_lift"] or None
                if not gate["passed"]:
                    night["status"], night["reason"] = "refused", "; ".join(gate["failures"])
                    return _finish(config, night, started, rows_path, staged)
                with stage("publish") as st:
                    staged = publish_task(config, staged, gate)
                    st["rows"] = staged["rows"]
                rows_path = layout.generated(run_date)
        night["status"] = "published"
        return _finish(config, night, started, rows_path, staged)
    except NightRefused:
        raise
    except BaseException as exc:
        night["reason"] = f"{type(exc).__name__}: {exc}"
        _finish(config, night, started, rows_path, staged, raise_refused=False)
        raise


def _finish(config: dict[str, Any], night: dict[str, Any], started: float, rows_path: Optional[str],
            staged: Optional[dict[str, Any]], raise_refused: bool = True) -> dict[str, Any]:
    """Writes the report (best effort on a failed night), drops refused staging, and fails a refused night."""
    night["seconds"] = round(time.time() - started, 2)
    try:
        night["report"] = report_task(config, night, rows_path)
    except Exception as exc:  # never hide the night's own outcome behind a report problem
        _warn(f"report not written: {type(exc).__name__}: {exc}")
        night["report"] = None
    if night["status"] != "published" and staged and staged.get("staging"):
        discard_generation(Store(validate(config).output), GenerateResult(**staged))
    if night["status"] == "refused" and raise_refused:
        raise NightRefused(f"{night['run_date']} not published: {night['reason']}"
                           + (f" (report: {night['report']})" if night["report"] else ""))
    return {"run_date": night["run_date"], "status": night["status"], "preprocess": night["preprocess"],
            "train": [m["train"] | {"promoted": m["promoted"], "promotion_failures": m["promotion_failures"]}
                      for m in night["models"] if m["train"]],
            "models": night["models"], "generate": staged, "gate": night["gate"], "report": night["report"],
            "stages": night["stages"], "seconds": night["seconds"]}


@flow(name="backfill")
def backfill_flow(config: dict[str, Any], run_dates: list[str], refresh: bool = False) -> list[dict[str, Any]]:
    """One nightly run per date, oldest first; each date is its own partition (re-running one replaces it).
    A refused or failed date does not stop the others; the flow fails at the end if any did."""
    results, failed = [], []
    for run_date in sorted(run_dates):
        try:
            results.append(nightly_flow(config, run_date, refresh))
        except Exception as exc:
            reason = str(exc) if isinstance(exc, NightRefused) else f"{type(exc).__name__}: {exc}"
            failed.append(f"{run_date}: {reason}")
            results.append({"run_date": run_date, "status": "failed", "reason": reason})
    if failed:
        done = [f"{r['run_date']} {r['status']}" for r in results if r["status"] != "failed"]
        raise RuntimeError(f"{len(failed)} of {len(run_dates)} nights failed: " + " | ".join(failed)
                           + (f" (the others: {', '.join(done)})" if done else ""))
    return results


@flow(name="nightly-from-config")
def nightly_from_config(config_path: str, run_date: Optional[str] = None,
                        overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """The nightly flow for work-pool deployments (``deploy/prefect.yaml``): the worker reads the YAML config
    shipped in its image, so a deployment's parameters stay a path and a few ``key=value`` overrides."""
    from .config import load_config

    cfg = load_config(config_path, overrides)
    return nightly_flow(as_dict(cfg), run_date or scheduled_date(cfg))  # this run's schedule, not the subflow's start

