"""How big generation's actor pools are, checked against the cluster's nodes before any work.

A Ray Data job with a pool that can never be placed waits for ever; ``size_pools`` fails at once instead,
naming the key to change, and shrinks an autoscaling ``[min, max]`` pool to what fits (``jobs.runtime.capacity``).
On GPUs the sampling actors each take ``num_gpus_per_actor`` GPUs and one CPU; the finishing actors (PNG, scores,
filters, Parquet files) share the CPUs, so ``encode_concurrency`` is what keeps the GPUs fed. There are no task
stages: the actors expand position ranges and write files themselves (``jobs.generate.actors``).
Without GPUs there is one pool, ``concurrency`` generating actors of one CPU each (sampling and finishing in one
process; ``jobs.generate.actors``), and ``encode_concurrency`` is not used.
"""

from __future__ import annotations

from jobs.generate.spec import GenerateSpec
from jobs.runtime import capacity, progress

FINISHER_CPUS = 0.5
Pool = tuple[int, int, int]  # (min, max, initial) actors
Pools = tuple[Pool, Pool | None]  # sampling (generating, on a CPU night), finishing (None on a CPU night)


def sampler_resources(spec: GenerateSpec) -> dict[str, float]:
    """What one sampling actor asks Ray for: a CPU, its GPU share with ``use_gpu``, and any custom resources."""
    return {"CPU": 1.0, **({"GPU": spec.num_gpus_per_actor} if spec.use_gpu else {}), **spec.resources_per_actor}


def _demands(spec: GenerateSpec, samplers: int, finishers: int) -> list[capacity.Demand]:
    if not spec.use_gpu:
        return [capacity.Demand("generating actor", "generate.concurrency", sampler_resources(spec), samplers)]
    return [capacity.Demand("sampling actor", "generate.concurrency", sampler_resources(spec), samplers),
            capacity.Demand("finishing actor", "generate.encode_concurrency", {"CPU": FINISHER_CPUS}, finishers)]


def size_pools(spec: GenerateSpec) -> Pools:
    """The sampling and finishing pools: a fixed pool that cannot be placed (beside the other pool) fails at once
    naming its key; an autoscaling pool's max is lowered to what fits, and the console says so."""
    (glo, ghi, _), (elo, ehi, _) = spec.pool(), spec.pool("encode_concurrency") if spec.use_gpu else (0, 0, 0)
    if capacity.autoscaling():  # the nodes that would hold the pools may not be up yet: Ray's autoscaler adds them
        return spec.pool(), spec.pool("encode_concurrency") if spec.use_gpu else None
    nodes = capacity.cluster_nodes()
    if spec.use_gpu and not any(n.get("GPU", 0) >= spec.num_gpus_per_actor for n in nodes):
        raise capacity.CapacityError("generate.use_gpu is true but no node of the Ray cluster has "
                                     f"{spec.num_gpus_per_actor:g} GPU to give a sampling actor")
    capacity.check(_demands(spec, glo, elo), "generation", nodes)
    g = capacity.largest_fitting(glo, ghi, lambda n: _demands(spec, n, elo), nodes)
    e = capacity.largest_fitting(elo, ehi, lambda n: _demands(spec, g, n), nodes)
    if (g, e) != (ghi, ehi) and spec.use_gpu:
        progress.say(f"[generate] the cluster fits {g} sampling and {e} finishing actors (the config allows up to {ghi} "
                     f"and {ehi}): using {g} and {e}")
    elif g != ghi:
        progress.say(f"[generate] the cluster fits {g} generating actors (the config allows up to {ghi}): using {g}")
    return (glo, g, g), (elo, e, e) if spec.use_gpu else None


def describe(spec: GenerateSpec, pools: Pools) -> str:
    (_, g, _), finishing = pools
    res = ", ".join(f"{k} {v:g}" for k, v in sampler_resources(spec).items())
    if finishing is None:
        return f"{g} generating (sampling and finishing) with {res} each"
    return f"{g} sampling with {res} each, {finishing[1]} finishing with CPU {FINISHER_CPUS:g} each"
