"""What the Ray cluster can hold, node by node, checked before a stage asks Ray for it.

Ray places every actor and task on one node. Four CPUs as two nodes of two are not four CPUs as one node:
two 1-CPU Generator actors and two half-CPU Finisher actors, spread one of each per node, leave half a CPU
on each node, and then no node can take a 1-CPU task although the cluster still counts one free CPU. Ray
Data and Ray Train count the cluster's totals and wait for ever for what can never be placed. So a stage
lists what it will ask for (``Demand``) and ``check`` packs it onto the alive nodes' real resources first:
a shortfall fails at once, with the resource that is short and the config key that asks for it.

The packing is first-fit over the demands largest first, the way Ray's default (``PACK``-like) scheduler
fills nodes; ``spread=True`` demands want one node each (``STRICT_SPREAD``). It checks the nodes' totals,
not what other jobs hold right now: a busy cluster is a wait (bounded elsewhere), a too-small one an error.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import ray

IGNORED = ("object_store_memory",)  # Ray Data manages its own object-store budget; never a placement resource


_autoscaling = False  # the cluster adds nodes on demand: its alive nodes are not all it can hold


def set_autoscaling(on: bool) -> None:
    """On a cluster whose autoscaler adds nodes (KubeRay ``enableInTreeAutoscaling``, ``ray up``), the nodes up
    now say nothing of what it can hold, so checks are skipped; waits stay bounded by each stage's timeout."""
    global _autoscaling
    _autoscaling = on


def autoscaling() -> bool:
    return _autoscaling


class CapacityError(ValueError):
    """The cluster cannot hold what the config asks; the message names the resource and the key."""


@dataclasses.dataclass(frozen=True)
class Demand:
    what: str  # for a person: "Generator actor"
    key: str  # the config key that sets how many or how big: "generate.concurrency"
    resources: dict[str, float]  # per unit, as Ray resources: {"CPU": 1, "GPU": 1, "accel": 1}
    count: int = 1
    spread: bool = False  # each unit on a node of its own (STRICT_SPREAD)


def cluster_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources (Ray's own names; ``node:*`` markers left out)."""
    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            out.append({k: float(v) for k, v in node.get("Resources", {}).items()
                        if not k.startswith("node:") and k not in IGNORED})
    return out


def _fmt(resources: dict[str, float], only: Iterable[str] | None = None) -> str:
    keep = set(resources) if only is None else set(only)
    return ", ".join(f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}"
                     for k, v in sorted(resources.items()) if k in keep) or "nothing"


def _place(nodes: list[dict[str, float]], demands: Iterable[Demand]) -> Demand | None:
    """Packs ``demands`` onto copies of ``nodes``; the first demand that finds no node, else None."""
    free = [dict(n) for n in nodes]
    units = [(d, i) for d in demands for i in range(d.count)]
    units.sort(key=lambda u: -sum(v for k, v in u[0].resources.items() if k != "memory"))
    used_by: dict[int, set[int]] = {}  # spread demands: nodes one of its units already took
    for d, _ in units:
        taken = used_by.setdefault(id(d), set())
        for j, node in enumerate(free):
            if d.spread and j in taken:
                continue
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in d.resources.items() if v > 0):
                for k, v in d.resources.items():
                    node[k] = node.get(k, 0.0) - v
                taken.add(j)
                break
        else:
            return d
    return None


def fits(demands: list[Demand], nodes: list[dict[str, float]] | None = None) -> bool:
    return _place(cluster_nodes() if nodes is None else nodes, demands) is None


def check(demands: list[Demand], stage: str, nodes: list[dict[str, float]] | None = None) -> None:
    """Raises ``CapacityError`` when ``demands`` cannot all be placed at once on the cluster's nodes (never on
    an autoscaling cluster: see ``set_autoscaling``)."""
    if _autoscaling and nodes is None:
        return
    nodes = cluster_nodes() if nodes is None else nodes
    failed = _place(nodes, demands)
    if failed is None:
        return
    asked = "; ".join(f"{d.count} x {d.what} ({_fmt(d.resources)}{', one per node' if d.spread else ''})" for d in demands)
    shown = {"CPU", "GPU"} | {k for d in demands for k in d.resources}
    have = "; ".join(f"node {i + 1}: {_fmt(n, shown)}" for i, n in enumerate(nodes)) or "no alive nodes"
    total = {k: sum(n.get(k, 0.0) for n in nodes) for d in demands for k in d.resources}
    need = {k: sum(d.count * d.resources.get(k, 0.0) for d in demands) for k in total}
    short = {k: need[k] - total[k] for k in need if need[k] > total[k] + 1e-9}
    keys = [failed.key]
    if short:
        why = "short of " + _fmt(short) + " in total"
        keys = list(dict.fromkeys(d.key for d in demands if any(d.resources.get(k, 0) > 0 for k in short)))
    elif failed.spread:
        why = f"{failed.count} units one per node need {failed.count} nodes with {_fmt(failed.resources)}"
    else:
        why = (f"enough in total, but no node has {_fmt(failed.resources)} left for a {failed.what} once the rest "
               "is placed (Ray puts each actor or task on one node)")
    raise CapacityError(f"{keys[0]}: {stage} cannot fit the Ray cluster: {why}. Asked: {asked}. Cluster: {have}. "
                        f"Lower {' or '.join(keys)} (or the resources they ask for), or add nodes that have them")


def largest_fitting(lo: int, hi: int, make: Callable[[int], list[Demand]],
                    nodes: list[dict[str, float]] | None = None) -> int:
    """The largest ``n`` in ``[lo, hi]`` for which ``make(n)`` fits; ``lo - 1`` when even ``lo`` does not."""
    nodes = cluster_nodes() if nodes is None else nodes
    for n in range(hi, lo - 1, -1):
        if _place(nodes, make(n)) is None:
            return n
    return lo - 1
