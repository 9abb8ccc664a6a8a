"""How big generation's actor pools are, checked against the cluster's nodes before any work.

A Ray Data job with a pool that can never be placed waits for ever; ``size_pools`` fails at once instead,
naming the key to change, and shrinks an autoscaling ``[min, max]`` pool to what fits (``jobs.runtime.capacity``).
On GPUs the sampling actors each take ``num_gpus_per_actor`` GPUs and one CPU; the finishing actors (PNG, scores,
filters) and the light expand and write tasks share the CPUs, so ``encode_concurrency`` is what keeps the GPUs fed.
"""

from __future__ import annotations

from jobs.generate.spec import GenerateSpec
from jobs.runtime import capacity, progress

FINISHER_CPUS = 0.5
TASK_CPUS = 0.25  # the expand and write tasks are light: a whole CPU each would not fit beside the actors
Pool = tuple[int, int, int]  # (min, max, initial) actors
Pools = tuple[Pool, Pool]  # sampling, finishing


def sampler_resources(spec: GenerateSpec) -> dict[str, float]:
    """What one sampling actor asks Ray for: a CPU, its GPU share with ``use_gpu``, and any custom resources."""
    return {"CPU": 1.0, **({"GPU": spec.num_gpus_per_actor} if spec.use_gpu else {}), **spec.resources_per_actor}


def _demands(spec: GenerateSpec, samplers: int, finishers: int) -> list[capacity.Demand]:
    return [capacity.Demand("sampling actor", "generate.concurrency", sampler_resources(spec), samplers),
            capacity.Demand("finishing actor", "generate.encode_concurrency", {"CPU": FINISHER_CPUS}, finishers),
            capacity.Demand("expand or write task", "generate.encode_concurrency", {"CPU": TASK_CPUS})]


def size_pools(spec: GenerateSpec) -> Pools:
    """The sampling and finishing pools: a fixed pool that cannot be placed (beside the other pool and a write
    task) fails at once naming its key; an autoscaling pool's max is lowered to what fits, and the console says so."""
    (glo, ghi, _), (elo, ehi, _) = spec.pool(), spec.pool("encode_concurrency")
    if capacity.autoscaling():  # the nodes that would hold the pools may not be up yet: Ray's autoscaler adds them
        return spec.pool(), spec.pool("encode_concurrency")
    nodes = capacity.cluster_nodes()
    if spec.use_gpu and not any(n.get("GPU", 0) >= spec.num_gpus_per_actor for n in nodes):
        raise capacity.CapacityError("generate.use_gpu is true but no node of the Ray cluster has "
                                     f"{spec.num_gpus_per_actor:g} GPU to give a sampling actor")
    capacity.check(_demands(spec, glo, elo), "generation", nodes)
    g = capacity.largest_fitting(glo, ghi, lambda n: _demands(spec, n, elo), nodes)
    e = capacity.largest_fitting(elo, ehi, lambda n: _demands(spec, g, n), nodes)
    if (g, e) != (ghi, ehi):
        progress.say(f"[generate] the cluster fits {g} sampling and {e} finishing actors (the config allows up to {ghi} "
                     f"and {ehi}): using {g} and {e}")
    return (glo, g, g), (elo, e, e)


def describe(spec: GenerateSpec, pools: Pools) -> str:
    (_, g, _), (_, e, _) = pools
    res = ", ".join(f"{k} {v:g}" for k, v in sampler_resources(spec).items())
    return f"{g} sampling with {res} each, {e} finishing with CPU {FINISHER_CPUS:g} each"
