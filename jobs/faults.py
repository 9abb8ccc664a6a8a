"""Fault injection for the reliability suite: ``AIGC_FAULT=point[:count[:at]][,point...]`` and
``AIGC_FAULT_MARKER=/path``.

Each fault fires at most ``count`` times (default 1) across processes, restarts and retries, once its
progress reached ``at`` (rows, steps: the point decides): each firing creates ``<marker>.<point>.<n>``
exclusively first, so a restarted actor or worker, or a retried task, sees it already fired. Several faults
can be armed at once (``train-raise:1:7,train-exit:1:12``). Nothing fires unless both variables are set.
The driver reads them once (``plan``) and hands the plan to its Ray actors and workers, which do not inherit
variables set after Ray started.

Points: ``generator-kill`` (a generation actor SIGKILLs itself after ``at`` rows), ``generator-slow`` (a
generation actor's batch takes 1.5 s longer: work queues up, as on a real night, and reaches the pool's other
actors), ``generate-after-staging``
(the generate task raises after writing its rows), ``train-raise`` / ``train-exit`` (a training worker
raises, or exits hard with ``os._exit``, after optimiser step ``at``), ``train-driver-kill`` (training's rank 0
SIGKILLs the driver once its first checkpoint at or after step ``at`` is registered).
"""

from __future__ import annotations

import os
from typing import Any


def plan() -> list[dict[str, Any]] | None:
    """The faults this process was asked to inject, as plain dicts for Ray actors and tasks."""
    spec, marker = os.environ.get("AIGC_FAULT"), os.environ.get("AIGC_FAULT_MARKER")
    if not spec or not marker:
        return None
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, _, rest = item.partition(":")
        args = rest.split(":") if rest else []
        out.append({"point": point, "count": int(args[0]) if args else 1, "at": int(args[1]) if len(args) > 1 else 0,
                    "marker": marker})
    return out


def fire(faults: list[dict[str, Any]] | None, point: str, progress: int = 0) -> bool:
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
