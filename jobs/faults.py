"""Fault injection for the reliability suite: ``AIGC_FAULT=point:count`` and ``AIGC_FAULT_MARKER=/path``.

A fault fires at most ``count`` times (default 1) across processes and retries: each firing creates
``<marker>.<n>`` exclusively first, so a restarted actor or a retried task sees it already fired. Nothing
fires unless both variables are set. The driver reads them once (``plan``) and hands the plan to its Ray
actors, which do not inherit variables set after Ray started.
"""

from __future__ import annotations

import os
from typing import Any


def plan() -> dict[str, Any] | None:
    """The fault this process was asked to inject, as a plain dict for Ray actors and tasks."""
    spec, marker = os.environ.get("AIGC_FAULT"), os.environ.get("AIGC_FAULT_MARKER")
    if not spec or not marker:
        return None
    point, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    return {"point": point, "count": int(args[0]) if args else 1, "at": int(args[1]) if len(args) > 1 else 0,
            "marker": marker}


def fire(fault: dict[str, Any] | None, point: str, progress: int = 0) -> bool:
    """True (once per allowed firing) when ``fault`` targets ``point`` and ``progress`` reached its ``at``."""
    if not fault or fault["point"] != point or progress < fault["at"]:
        return False
    for n in range(1, fault["count"] + 1):
        try:
            os.close(os.open(f"{fault['marker']}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


def fired(marker: str) -> int:
    """How many times the fault behind ``marker`` fired."""
    folder, name = os.path.split(marker)
    return sum(1 for f in os.listdir(folder or ".") if f.startswith(f"{name}.") and f[len(name) + 1:].isdigit())
