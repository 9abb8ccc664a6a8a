"""The Prefect flows: each stage as a flow of its own, and ``nightly`` running them in order.

A flow reads as the story of the job: it calls the tasks (``pipelines.tasks``) in order and keeps what they
return in a ``NightResult``; what each stage decides lives in ``jobs`` (promotion and the gate's verdict in
``jobs.gate.policy``, when to retrain in ``jobs.train.policy``). Flows take the config as a ``PipelineConfig``
(Prefect validates a dict into one, so a deployment's JSON parameters work too).
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Optional
from zoneinfo import ZoneInfo

from prefect import flow

from jobs.data.curate import PreprocessResult, prune_raw_staging, raw_staging
from jobs.gate import policy
from jobs.gate.policy import Promotion
from jobs.generate.manifest import GenerateResult, discard_night
from jobs.runtime import budget, capacity
from jobs.runtime.usage import NightOverBudget, Reading, UsageMeter, between
from jobs.store import layout, registry
from jobs.store.commit import discard
from jobs.store.lease import night_lease
from jobs.store.storage import Store
from jobs.train.run import TrainResult, worker_demand
from jobs.train.spec import ModelSpec

from .config import PipelineConfig
from .night import ModelTonight, NightResult
from .report import earlier_nights
from .tasks import (
    CACHE_EXPIRATION,
    curate_task,
    evaluate_task,
    gate_task,
    generate_task,
    night_key,
    open_store,
    promote_task,
    publish_task,
    read_source_task,
    report_task,
    retrain_task,
    train_task,
    warn,
)


class NightRefused(RuntimeError):
    """Tonight's output failed the quality gate: nothing was published and production is unchanged."""


def scheduled_date(cfg: PipelineConfig) -> str:
    """The partition a run without a date writes: the day its flow run was scheduled for, in the schedule's
    timezone. A night due at 23:30 that waits behind the last one (``overlap: queue``), or that a busy worker
    starts after midnight, still writes the night it was due; an ad-hoc run's scheduled time is its creation."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time.astimezone(ZoneInfo(cfg.schedule.timezone)).date().isoformat()


def _raw_key(cfg: PipelineConfig, run_date: str) -> str:
    """What a night's source reads depend on: its staging folder is named by it (``jobs.data.curate.raw_staging``)."""
    dump = lambda m: m.model_dump(mode="json")  # noqa: E731
    return night_key("raw", cfg, [dump(s) for s in cfg.sources], dump(cfg.preprocess), dump(cfg.security), run_date)[-16:]


def _curate(cfg: PipelineConfig, run_date: Optional[str], refresh: bool) -> PreprocessResult:
    """One read task per source into a staging folder, then curation. A night's folder stays until the night ends
    (``_finish``), so a re-run of a failed night reads only the sources whose reads are not cached."""
    store = Store(cfg.output)
    staging = raw_staging(store, run_date, None if run_date is None else _raw_key(cfg, run_date))
    try:
        counts = [read_source_task.with_options(refresh_cache=refresh)(cfg, i, s.source_id, staging, run_date)
                  for i, s in enumerate(cfg.sources)]
        return curate_task.with_options(refresh_cache=refresh)(cfg, staging, run_date, counts)
    finally:
        if run_date is None:  # no night to resume
            discard(store, staging)


def gate_candidate(cfg: PipelineConfig, name: str, version: str, final_metrics: dict[str, float]) -> Promotion:
    """Evaluates the candidate ``version`` (and production, when it is another version) when the gate asks for it,
    then lets the promote task decide whether it becomes production."""
    evaluation = baseline = None
    if policy.needs_evaluation(cfg.gate, final_metrics):
        evaluation = evaluate_task(cfg, name, version)
        production = registry.production(Store(cfg.output), name)
        if production and production != version:
            baseline = policy.candidate_baseline(evaluation, evaluate_task(cfg, name, production))
    return promote_task(cfg, name, version, final_metrics, evaluation, baseline)


def _model_tonight(cfg: PipelineConfig, m: ModelSpec, night: NightResult, refresh: bool) -> ModelTonight:
    """Trains ``m`` when it needs training (new data, new config, or the cadence) and gates the candidate; either
    way says which production version generates tonight."""
    entry = ModelTonight(m.name, m.family, m.modality, "up to date: production was trained on this dataset and config")
    version = night.preprocess.dataset_version
    reason = retrain_task(cfg, m.name, version, night.run_date)
    if reason:
        entry.decision = reason
        with night.stage(f"train:{m.name}") as st:
            entry.trained = train_task.with_options(refresh_cache=refresh)(cfg, m.name, version, promote="never",
                                                                           run_date=night.run_date)
            st.rows_per_second, st.note = entry.trained.samples_per_second, f"{reason}; samples/s"
        with night.stage(f"evaluate:{m.name}"):
            entry.promotion = gate_candidate(cfg, m.name, entry.trained.model.version, entry.trained.final_metrics)
    entry.version = registry.production(Store(cfg.output), m.name)
    return entry


def _models_tonight(cfg: PipelineConfig, night: NightResult, refresh: bool) -> list[ModelTonight]:
    """Every model's decision, training and gate. The models are independent: with ``train.concurrent_models``
    and a cluster that holds all their worker groups at once they go through it at the same time (a thread each,
    in the flow run's context), else one after another. A model that fails fails the night once the others end."""
    if not (len(cfg.models) > 1 and cfg.train.concurrent_models and _all_groups_fit(cfg)):
        return [_model_tonight(cfg, m, night, refresh) for m in cfg.models]
    pool = ThreadPoolExecutor(len(cfg.models), thread_name_prefix="model")
    futures = [pool.submit(contextvars.copy_context().run, _model_tonight, cfg, m, night, refresh) for m in cfg.models]
    try:
        while wait(futures, timeout=0.5).not_done:  # short waits: a budget stop is not held up until every run returns
            pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on a stop, the runs end with the driver's Ray
    return [f.result() for f in futures]


def _all_groups_fit(cfg: PipelineConfig) -> bool:
    open_store(cfg)  # Ray up: its nodes decide
    return not capacity.autoscaling() and capacity.fits([worker_demand(cfg.train) for _ in cfg.models])


def _output(cfg: PipelineConfig, night: NightResult, refresh: bool) -> None:
    """generate (staged) -> gate -> publish; a night whose output fails the gate is ``refused``."""
    missing = [m.name for m in night.models if m.version is None]
    if missing:
        failures = "; ".join(f for m in night.models if m.promotion for f in m.promotion.failures)
        raise RuntimeError(f"no production version of {', '.join(missing)} (its first version failed the gate: {failures})")
    with night.stage("generate") as st:
        staged = night.generate = generate_task(cfg, night.run_date, publish_now=False, force=refresh)
        st.rows = 0 if staged.reused else staged.manifest["generated"]
        st.note = "already published from this exact work: nothing regenerated" if staged.reused else None
    if staged.reused:  # a re-run of a committed night: its gate verdict stands
        night.gate = staged.manifest.get("gate")
        night.status = "published"
        return
    verdict = None
    if cfg.gate.enabled:
        with night.stage("gate") as st:
            verdict = gate_task(cfg, staged)
            st.rows = sum(verdict.rows.values())
        night.gate = verdict.as_dict()
        if not verdict.passed:
            night.status, night.reason = "refused", "; ".join(verdict.failures)
            return
    night.over_budget()
    if night.meter:  # the night's work is done and judged: it publishes whole, whatever the meter finds now
        night.meter.shield()
    with night.stage("publish") as st:
        night.generate = publish_task(cfg, staged, verdict, budget_cost(night))
        st.rows = night.generate.rows
    night.status = "published"


def _start_budget(cfg: PipelineConfig, night: NightResult) -> None:
    """Refuses a night whose estimate is over its budget (before any work), then starts the meter that records
    what each stage reserves and stops the night when it runs over."""
    guess = budget.estimate(cfg.budget, earlier_nights(Store(cfg.output), night.run_date))
    night.cost = {"budget": budget.limits(cfg.budget), "estimate": guess}
    why = budget.refusal(cfg.budget, guess)
    if why:
        night.status, night.reason = "refused", why
        raise NightRefused(f"{night.run_date} not started: {why}")
    night.meter = UsageMeter(check=budget.checker(cfg.budget, time.time(), lambda: night.current)).start()


def budget_cost(night: NightResult) -> dict:
    """The night's cost so far: per stage (``night.stages``), in all, against its budget and estimate."""
    cost = {k: v for k, v in night.cost.items() if k != "total"}
    meter = night.meter
    if meter is not None:
        first = Reading(meter.started)
        cost["total"] = between(first, meter.reading(), meter.peak_since(meter.started))
        cost["sampled"] = meter.samples > 1
        if meter.stopped_because:
            cost["over"] = meter.stopped_because
    cost["stages"] = [{k: getattr(s, k) for k in ("stage", "seconds", "rows", "cpu_seconds", "gpu_seconds",
                                                  "rows_per_cpu_second", "rows_per_gpu_second", "object_store_peak_bytes",
                                                  "nodes")} for s in night.stages]
    return cost


def _finish(cfg: PipelineConfig, night: NightResult, started: float) -> None:
    """Stops the meter, writes the report (best effort on a failed night) and drops a staged night that was not
    published, unless a budget stopped it (a re-run with a larger budget resumes from its staging)."""
    night.seconds = round(time.time() - started, 2)
    if night.meter is not None:
        night.meter.shield()
        night.meter.stop()
        night.cost = budget_cost(night)
    gen: Optional[GenerateResult] = night.generate
    rows_path = None if gen is None else gen.staging or layout.generated(night.run_date)
    try:
        night.report = report_task(cfg, night.to_dict(), rows_path)
    except Exception as exc:  # never hide the night's own outcome behind a report problem
        warn(f"report not written: {type(exc).__name__}: {exc}")
    if night.status not in ("published", "stopped") and gen is not None and gen.staging:
        discard_night(Store(cfg.output), gen)
    # the night's read sources, unless a re-run may still need them, and other nights' whose cached reads expired
    prune_raw_staging(Store(cfg.output), night.run_date if night.status not in ("failed", "stopped") else None,
                      CACHE_EXPIRATION.total_seconds())


@flow(name="nightly")
def nightly_flow(config: PipelineConfig, run_date: Optional[str] = None, refresh: bool = False) -> NightResult:
    """preprocess -> train (when the data or config changed, or on the cadence) -> evaluate and promote ->
    generate (staged) -> quality gate -> publish -> report. A night whose output fails the gate publishes
    nothing and the flow run fails with the reason; the report is written either way. A ``budget`` refuses a
    night whose estimate is over it, and stops one that runs over (``NightOverBudget``), keeping its staging.

    Reading, curation and training are cached per night: re-running a night that failed at a later stage skips
    them; ``refresh`` recomputes them. Generation resumes from its own staging, and a night already published
    from exactly the same work is not regenerated (``refresh`` regenerates it)."""
    cfg, run_date = config, run_date or scheduled_date(config)
    with night_lease(Store(cfg.output), run_date):  # one night at a time per output root, however started
        layout.open_root(cfg.output)  # an older root is moved into the current layout, never beside a running night
        night, started = NightResult(cfg.name, run_date), time.time()
        try:
            _start_budget(cfg, night)
            with night.stage("preprocess") as st:
                night.preprocess = _curate(cfg, run_date, refresh)
                st.rows = night.preprocess.counts["inputs"]
            night.models = _models_tonight(cfg, night, refresh)
            if cfg.generate.requests or cfg.generate.request_tables:
                _output(cfg, night, refresh)
            else:
                night.status = "published"
            if night.meter:  # the work is over: nothing may interrupt the report and the clean-up now
                night.meter.shield()
        except BaseException as exc:
            if night.meter:
                night.meter.shield()
            if isinstance(exc, KeyboardInterrupt) and night.meter and night.meter.stopped_because:
                exc = NightOverBudget(night.meter.stopped_because)  # stopped between stages, or re-raised by Ray
            if isinstance(exc, NightOverBudget):
                night.status, night.reason = "stopped", str(exc)
            elif night.status != "refused":
                night.reason = f"{type(exc).__name__}: {exc}"
            _finish(cfg, night, started)
            if isinstance(exc, NightOverBudget):
                raise exc from None
            raise
        _finish(cfg, night, started)
    if night.status == "refused":
        raise NightRefused(f"{run_date} not published: {night.reason}" + (f" (report: {night.report})" if night.report else ""))
    return night


@flow(name="backfill")
def backfill_flow(config: PipelineConfig, run_dates: list[str], refresh: bool = False) -> list[NightResult]:
    """One nightly run per date, oldest first; each date is its own partition (re-running one replaces it).
    A refused or failed date does not stop the others; the flow fails at the end if any did."""
    results, failed = [], []
    for run_date in sorted(run_dates):
        try:
            results.append(nightly_flow(config, run_date, refresh))
        except (Exception, NightOverBudget) as exc:  # a night over its budget stops that night, not the backfill
            reason = str(exc) if isinstance(exc, NightRefused) else f"{type(exc).__name__}: {exc}"
            failed.append(f"{run_date}: {reason}")
            results.append(NightResult(config.name, run_date, status="failed", reason=reason))
    if failed:
        done = [f"{r.run_date} {r.status}" for r in results if r.status != "failed"]
        raise RuntimeError(f"{len(failed)} of {len(run_dates)} nights failed: " + " | ".join(failed)
                           + (f" (the others: {', '.join(done)})" if done else ""))
    return results


@flow(name="nightly-from-config")
def nightly_from_config(config_path: str, run_date: Optional[str] = None,
                        overrides: Optional[list[str]] = None) -> NightResult:
    """The nightly flow for work-pool deployments (``deploy/prefect.yaml``): the worker reads the YAML config
    shipped in its image, so a deployment's parameters stay a path and a few ``key=value`` overrides."""
    from .config import load_config

    cfg = load_config(config_path, overrides)
    return nightly_flow(cfg, run_date or scheduled_date(cfg))  # this run's schedule, not the subflow's start


@flow(name="preprocess")
def preprocess_flow(config: PipelineConfig) -> PreprocessResult:
    return _curate(config, None, False)


@flow(name="train")
def train_flow(config: PipelineConfig, models: Optional[list[str]] = None, dataset_version: Optional[str] = None,
               fresh: bool = False) -> list[TrainResult]:
    return [train_task(config, name, dataset_version, fresh) for name in models or [m.name for m in config.models]]


@flow(name="generate")
def generate_flow(config: PipelineConfig, run_date: Optional[str] = None, count: Optional[int] = None,
                  refresh: bool = False) -> GenerateResult:
    return generate_task(config, run_date or scheduled_date(config), count, force=refresh)
