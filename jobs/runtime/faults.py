"""Injected faults, the one way to rehearse a failure: ``AIGC_FAULT=point[:count[:at]][,point...]`` and
``AIGC_FAULT_MARKER=/path``.

Each fault fires at most ``count`` times (default 1) across processes, restarts and retries, once its progress
reached ``at`` (rows, steps, batches: the point decides): each firing creates ``<marker>.<point>.<n>``
exclusively first, so a restarted actor or worker, or a retried task, sees it already fired (a new marker path
arms the faults afresh). Several faults can be armed at once (``train-raise:1:7,train-exit:1:12``). Nothing fires
unless both variables are set. The driver
reads the variables once (``plan``) and hands the plan, with its own pid, to its Ray actors and workers, which
do not inherit variables set after Ray started.

Points:

| point | where | what happens once progress reaches ``at`` |
| --- | --- | --- |
| ``generator-kill`` | a sampling actor | SIGKILLs itself after ``at`` rows |
| ``generator-slow`` | a sampling actor | its batch takes 1.5 s longer (work queues up and reaches the pool's others) |
| ``generate-driver-kill`` | a finishing actor | after ``at`` batches, SIGKILLs the driver (a lost head node) |
| ``generate-after-staging`` | the generate task | raises after writing its rows (Prefect retries it) |
| ``train-raise`` / ``train-exit`` | a training worker | raises, or exits hard with ``os._exit``, after optimiser step ``at`` |
| ``train-worker-kill`` | the last training worker | SIGKILLs itself once its first checkpoint at or after step ``at`` is registered |
| ``train-driver-kill`` | training's rank 0 | SIGKILLs the driver once its first checkpoint at or after step ``at`` is registered |
"""

from __future__ import annotations

import os
from typing import Any

POINTS = ("generator-kill", "generator-slow", "generate-driver-kill", "generate-after-staging", "train-raise",
          "train-exit", "train-worker-kill", "train-driver-kill")

Plan = list[dict[str, Any]]


def plan() -> Plan | None:
    """The faults this process was asked to inject, as plain dicts for Ray actors and tasks (each names the
    driver's pid, for the points that kill it). ``ValueError`` for a point that does not exist."""
    spec, marker = os.environ.get("AIGC_FAULT"), os.environ.get("AIGC_FAULT_MARKER")
    if not spec or not marker:
        return None
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, _, rest = item.partition(":")
        if point not in POINTS:
            raise ValueError(f"AIGC_FAULT: unknown fault point {point!r} (known: {', '.join(POINTS)})")
        args = rest.split(":") if rest else []
        out.append({"point": point, "count": int(args[0]) if args else 1, "at": int(args[1]) if len(args) > 1 else 0,
                    "marker": marker, "driver_pid": os.getpid()})
    return out


def fire(faults: Plan | None, point: str, progress: int = 0) -> bool:
    """True (once per allowed firing) when one of ``faults`` targets ``point`` and ``progress`` reached its
    ``at``."""
    for fault in faults or []:
        if fault["point"] != point or progress < fault["at"]:
            continue
        for n in range(1, fault["count"] + 1):
            try:
                os.close(os.open(f"{fault['marker']}.{point}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return True
            except FileExistsError:
                continue
    return False


def driver_pid(faults: Plan | None) -> int | None:
    """The pid of the process that armed ``faults`` (the driver), or None when nothing is armed."""
    return faults[0]["driver_pid"] if faults else None


def fired(marker: str, point: str | None = None) -> int:
    """How many times the faults behind ``marker`` (or only ``point``'s) fired."""
    folder, name = os.path.split(marker)
    count = 0
    for f in os.listdir(folder or "."):
        if not f.startswith(f"{name}."):
            continue
        fault_point, _, n = f[len(name) + 1:].rpartition(".")
        if n.isdigit() and fault_point and (point is None or fault_point == point):
            count += 1
    return count
