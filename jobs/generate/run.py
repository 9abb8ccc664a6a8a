"""Batch generation on Ray Data, published atomically as ``ROOT/generated/date=YYYY-MM-DD/`` (``jobs.store.layout``).

The pipeline: request *cells* (``jobs.generate.plan``, held on the driver) -> position ranges, small first and
growing to a file's worth -> actors that expand each range into rows, sample them (the models, on GPUs with
``use_gpu``), finish them (PNG with the provenance label, quality scores, filters) and write the range as one
Parquet file of the staging folder. Without GPUs one pool of ``GeneratingActor``s does it all in one process; on
GPUs sampling actors feed finishing actors on the CPUs (``jobs.generate.actors``). The driver never holds a row
per sample, and the rows never pass through it, so a million-row night keeps its memory flat.

Reproducibility: a row's id and seed come from (run date, request id, sample index), and each row is sampled on
its own, so its bytes never depend on batch size, actor count or row order.

Nothing is dropped: rows whose sampling raises and rows a filter refuses land in ``ROOT/rejects/generated/date=.../``
with a reason code; the manifest checks that generated = published + rejected. With ``filters.top_up`` the job
samples replacements for the refused rows until every cell has its count, for at most ``top_up_rounds`` rounds.

Resumable (``jobs.generate.staging``): the staging folder is named by a fingerprint of what the night will
produce; a re-run after a crash keeps the files already written and generates only the missing rows. Each top-up
round's plan is saved before it runs, so an interrupted night publishes the same rows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from jobs.generate.actors import GeneratingActor, RangeSamplingActor, StagingFinishingActor
from jobs.generate.manifest import GenerateResult, build_manifest, publish_night, published_unchanged
from jobs.generate.plan import NightRun, RowSource, cap_cells, load_requests, plan_cells, position_ranges, top_up_plan
from jobs.generate.pools import FINISHER_CPUS, Pools, describe, sampler_resources, size_pools
from jobs.generate.spec import FilterSpec, GenerateSpec
from jobs.generate.staging import ACTORS, REJECTED, NightStaging, StagedOutput
from jobs.runtime import faults, progress
from jobs.store import layout, registry, schema
from jobs.store.commit import resumable_staging
from jobs.store.credentials import Signer
from jobs.store.registry import ModelRef
from jobs.store.rejects import ErrorBudgetExceeded, check_error_budget
from jobs.store.storage import Store


FIRST_RANGE_ROWS = 64


@dataclasses.dataclass
class _Job:
    """Everything one night's Ray Data passes share."""

    spec: GenerateSpec
    store: Store
    staging: NightStaging
    run: NightRun
    briefs: pa.Table | None
    per_row: int  # bytes a published row takes at most
    pools: Pools
    fault: faults.Plan | None
    signer: Signer | None


def run_generation(spec: GenerateSpec, store: Store, run_date: str, run_name: str, count: int | None = None,
                   versions: dict[str, str] | None = None, publish_now: bool = True, force: bool = False,
                   signer: Signer | None = None) -> GenerateResult:
    """Generates the configured requests for ``run_date`` and publishes the partition whole.

    ``count`` caps the rows (first N in request order) for quick runs; ``versions`` pins model versions (default:
    each model's production version). An interrupted run of the same night resumes. With ``publish_now=False``
    the partition stays staged (``result.staging``) for the quality gate to judge; ``publish_night`` or
    ``discard_night`` then settles it. A date already published from exactly the same work (requests, model
    checkpoints, filters, briefs, device, signer) is not regenerated unless ``force``. With a ``signer`` every
    published image carries signed Content Credentials (``jobs.store.credentials``); without one the night is
    unsigned and its manifest says so."""
    started = time.time()
    date.fromisoformat(run_date)  # ValueError for a malformed date, before any work
    cells, briefs, models = load_requests(spec, store, lambda n: registry.resolve(store, n, (versions or {}).get(n)))
    cells = cap_cells(cells, count)
    if cells.empty or cells["n"].sum() == 0:
        raise ValueError("generate.requests: nothing to generate (no requests or request tables, or all counts are zero)")
    pools = size_pools(spec)  # before any work: a night the cluster cannot hold fails now, naming the key
    cells = cells.sort_values("model_name", kind="stable").reset_index(drop=True)  # blocks of one model
    key = _fingerprint(run_date, cells, models, spec.filters, briefs, spec.use_gpu, signer)
    run = NightRun(f"{run_name}:{run_date}:{key[:8]}", run_date, key, models)
    done_before = None if force else published_unchanged(store, run_date, key, run.run_id)
    if done_before is not None:
        progress.say(f"[generate] {layout.night(run_date)} is already published from the same requests, models and "
                     "settings: nothing to regenerate (--refresh regenerates it)")
        return GenerateResult(run_date, run.run_id, store.display(layout.generated(run_date)), done_before["rows"],
                              done_before["rejected"], done_before["by_modality"], time.time() - started, 0.0,
                              done_before, None, reused=True)
    path, resumed = resumable_staging(store, layout.GENERATED, layout.night(run_date), key[:16])
    job = _Job(spec, store, NightStaging(store, path), run, briefs, _bytes_per_row(cells, models, signer), pools,
               faults.plan(), signer)
    manifest, generated, gen_seconds = _generate(job, cells, resumed)
    result = GenerateResult(run_date, run.run_id, store.display(layout.generated(run_date)), manifest["rows"],
                            manifest["rejected"], manifest["by_modality"], time.time() - started,
                            generated / max(gen_seconds, 1e-9), manifest, path)
    return publish_night(store, result, signer=signer) if publish_now else result


def _generate(job: _Job, cells: pd.DataFrame, resumed: bool) -> tuple[dict, int, float]:
    """Every pass of the night into its staging folder, then the manifest read back from the files: (manifest,
    rows generated, seconds). A night whose counts do not add up, or over its error budget, drops its staging."""
    resume = {"truncated_files_dropped": job.staging.drop_truncated(), "rows_found": 0} if resumed else None
    started = time.time()
    done = job.staging.ids() if resumed else frozenset()
    if resume is not None:
        resume["rows_found"] = len(done)
        progress.say(f"[generate] resuming {layout.night(job.run.run_date)}: {len(done)} rows already written in "
                     f"{job.store.display(job.staging.path)}")
    generated, rounds = int(cells["n"].sum()), []
    with progress.watch("generate", generated, "rows", job.staging.rows, every=2.0 if job.store.is_local else 10.0):
        _passes(job, cells, done, rounds)
    job.staging.drop_temporary()  # a retried block's unfinished write: its rows are in the retry's file
    generated += sum(rounds)
    seconds = time.time() - started
    manifest = build_manifest(job.staging, cells, job.run, generated, seconds, rounds, resume, job.spec.filters,
                              job.signer)
    if manifest["rows"] + manifest["rejected"] != generated:
        job.staging.discard()  # never resume from a state that does not add up: the re-run starts clean
        raise RuntimeError(f"accounting broke: {generated} generated, {manifest['rows']} written, {manifest['rejected']} rejected")
    try:
        check_error_budget("generate.filters.max_reject_share", manifest["rejected"], generated,
                           manifest["rejected_by_reason"], job.spec.filters.max_reject_share, "generated rows")
    except ErrorBudgetExceeded:
        job.staging.discard()  # a re-run generates the night anew (with the settings fixed)
        raise
    return manifest, generated, seconds


def _passes(job: _Job, cells: pd.DataFrame, done: frozenset, rounds: list[int]) -> None:
    """The first pass, then (with ``filters.top_up``) replacement rounds; ``rounds`` gets each round's rows."""
    _pipeline(job, cells, done)
    if not (job.spec.filters.enabled and job.spec.filters.top_up):
        return
    plans = job.staging.plans()
    for r in range(job.spec.filters.top_up_rounds):
        if r == len(plans):
            plan = top_up_plan(cells, job.staging.accepted_per_cell(), plans)
            if not plan:
                break
            plans.append(plan)
            job.staging.save_plans(plans)  # before the work: a resumed night replays the same plan
        extra = plan_cells(cells, plans[r])
        _pipeline(job, extra, job.staging.ids())
        rounds.append(int(extra["n"].sum()))


def _pipeline(job: _Job, cells: pd.DataFrame, skip: frozenset) -> None:
    """One Ray Data pass: position ranges of ``cells`` (minus ``skip``) -> actors that expand, sample, finish and
    write each range as one Parquet file of the staging folder."""
    total = int(cells["n"].sum())
    if total == 0:
        return
    spec = job.spec
    group = max(1, min(spec.row_group_bytes, spec.max_file_bytes) // job.per_row)
    # Position ranges from the driver (no read tasks: a node whose actors left it half a CPU can never run Ray
    # Data's 1-CPU reads; jobs/runtime/capacity.py). The first ranges are one model call (64 rows at least, so a
    # small night is not cut into crumbs): the first files land within seconds, and the next ranges grow.
    first = max(spec.batch_size, FIRST_RANGE_ROWS)
    ranges = position_ranges(total, first, max(1, spec.max_file_bytes // job.per_row), job.pools[0][1])
    context = ray.data.DataContext.get_current()  # a dataset keeps the context it was made in: set it first
    waited, context.wait_for_min_actors_s = context.wait_for_min_actors_s, spec.actor_start_timeout_s
    ds = _work(job, ray.data.from_items([{"start": a, "stop": b} for a, b in ranges], override_num_blocks=len(ranges)),
               RowSource(cells, job.run.run_date, skip, spec.batch_size), StagedOutput(job.staging.path, group))
    try:  # a pool that cannot start within actor_start_timeout_s fails the night; it never waits for ever
        for _ in ds.iter_batches(batch_size=None):  # counts only: the rows are in their files already
            pass
    except Exception as exc:  # Ray Data's GetTimeoutError, raised in its executor (wrapped or not)
        if "Timed out while starting actors" not in str(exc):
            raise
        raise RuntimeError(f"generate.actor_start_timeout_s: the generation actors ({describe(spec, job.pools)}) did "
                           f"not all start within {spec.actor_start_timeout_s}s. The cluster can hold them, so other "
                           "work holds the resources they ask for: wait for it, lower generate.concurrency, or raise "
                           "generate.actor_start_timeout_s") from None
    finally:
        context.wait_for_min_actors_s = waited


def _work(job: _Job, ranges: ray.data.Dataset, rows: RowSource, out: StagedOutput) -> ray.data.Dataset:
    """Ranges -> written files' counts: one pool of ``GeneratingActor``s on a CPU night; on GPUs, sampling actors
    there and finishing actors on the CPUs (``jobs.generate.pools``)."""
    spec, (sampling, finishing) = job.spec, job.pools
    resources = sampler_resources(spec)
    sampler = {"root": job.store.root, "use_gpu": spec.use_gpu, "fault": job.fault,
               "stats_dir": f"{job.staging.path}/{ACTORS}", "models": {n: ref.version for n, ref in job.run.models.items()}}
    finisher = {"store_root": job.store.root, "run": job.run, "filters": spec.filters, "briefs": job.briefs,
                "rejected_dir": f"{job.staging.path}/{REJECTED}", "fault": job.fault, "signer": job.signer}
    placement = {"concurrency": _concurrency(sampling), "num_cpus": resources.pop("CPU"),
                 "num_gpus": resources.pop("GPU", None), "resources": resources or None}
    if finishing is None:
        return ranges.map_batches(GeneratingActor, fn_constructor_kwargs={
            "rows": rows, "out": out, "sampling": sampler, "finishing": finisher},
            batch_size=1, batch_format="numpy", **placement)  # a range per call (it holds batch_size rows or more)
    return (ranges.map_batches(RangeSamplingActor, fn_constructor_kwargs={"rows": rows, **sampler}, batch_size=1,
                               batch_format="numpy", **placement)
            .map_batches(StagingFinishingActor, fn_constructor_kwargs={"out": out, "batch_size": spec.batch_size, **finisher},
                         batch_size=None, batch_format="pandas", concurrency=_concurrency(finishing), num_cpus=FINISHER_CPUS))


def _concurrency(pool: tuple[int, int, int]) -> int | tuple[int, int, int]:
    lo, hi, initial = pool
    return hi if lo == hi else (lo, hi, initial)


def _fingerprint(run_date: str, cells: pd.DataFrame, models: dict[str, ModelRef], filters: FilterSpec,
                 briefs: pa.Table | None, use_gpu: bool, signer: Signer | None) -> str:
    """What the night will publish, exactly: rows differ across device types, so the device is part of it; and
    who signs its images (another chain, or none, publishes other files)."""
    who = None if signer is None else signer.describe()["certificate_sha256"]
    h = hashlib.sha256(json.dumps([run_date, schema.GENERATED_SCHEMA_VERSION, filters.model_dump(), use_gpu, who,
                                   {n: r.card.checkpoint_sha256 for n, r in sorted(models.items())}]).encode())
    h.update(pd.util.hash_pandas_object(cells.astype(str), index=False).to_numpy().tobytes())
    if briefs is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, briefs.schema) as w:
            w.write_table(briefs)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _bytes_per_row(cells: pd.DataFrame, models: dict[str, ModelRef], signer: Signer | None) -> int:
    """A generous upper bound of one published row's bytes (PNGs of noise barely compress; labels and lineage
    strings add a few KB; a signed image its Content Credentials: the chain and a few KB of claim), used to cut
    files and row groups by bytes."""
    worst = 0
    for name, group in cells.groupby("model_name"):
        if models[name].card.modality == "image":
            payload = int(np.prod(models[name].card.image_shape)) + 1024 + (len(signer.chain_pem) + 4096 if signer else 0)
        else:
            longest = max(len((p or "").encode()) for p in group["prompt"])
            payload = longest + 4 * max(json.loads(s).get("max_new_tokens", 256) for s in group["sampler"])
        worst = max(worst, payload)
    return worst + 6 * 1024
