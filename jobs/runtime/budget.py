"""A night's budget: the estimate it is refused on before it starts, and the check that stops it while it runs.

The estimate is the costliest of the last ``history_nights`` published nights under the same ROOT, per resource
(their reports keep what they used; a night that crossed a limit during its publish step is left out, or it would
refuse every night after it): a night that retrains costs more than one that reuses production, and the
costliest recent night is the honest guess for one that may. A first night has no estimate; only the running check
applies to it. The running check compares what the ``UsageMeter`` has integrated so far (and the wall time) with
each limit and names the first one crossed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jobs.runtime.spec import BudgetSpec
from jobs.runtime.usage import Reading

# (config key, usage key, seconds per unit, unit)
LIMITS = (("cpu_hours", "cpu_seconds", 3600.0, "CPU-hours"), ("gpu_hours", "gpu_seconds", 3600.0, "GPU-hours"),
          ("wall_minutes", "wall_seconds", 60.0, "minutes"))


def limits(spec: BudgetSpec) -> dict[str, float]:
    """The limits set, in the config's units (``{"cpu_hours": 0.5}``)."""
    return {key: getattr(spec, key) for key, *_ in LIMITS if getattr(spec, key) is not None}


def estimate(spec: BudgetSpec, nights: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per resource, the most any of the last ``history_nights`` published nights used (``cost.total`` of their
    report), with the nights it comes from; None without such a night."""
    costed = [n for n in nights if n.get("status") == "published" and (n.get("cost") or {}).get("total")
              and not n["cost"].get("over")]  # a night that crossed a limit while publishing would refuse all after it
    recent = sorted(costed, key=lambda n: n["run_date"])[-spec.history_nights:]
    if not recent:
        return None
    out: dict[str, Any] = {"from_nights": [n["run_date"] for n in recent]}
    for _, usage, _, _ in LIMITS:
        out[usage] = max(float(n["cost"]["total"].get(usage) or 0.0) for n in recent)
    return out


def refusal(spec: BudgetSpec, guess: dict[str, Any] | None) -> str | None:
    """Why the night must not start (the first limit the estimate exceeds), or None."""
    if guess is None:
        return None
    for key, usage, per, unit in LIMITS:
        limit = getattr(spec, key)
        if limit is not None and guess[usage] / per > limit:
            return (f"budget.{key}: tonight's estimate is {guess[usage] / per:.3g} {unit} (the costliest of the last "
                    f"{len(guess['from_nights'])} nights under this ROOT: {', '.join(guess['from_nights'])}), over the "
                    f"limit {limit:g}; raise budget.{key} or make the night smaller")
    return None


def checker(spec: BudgetSpec, started: float, where: Callable[[], str]) -> Callable[[Reading], str | None] | None:
    """The running check for a ``UsageMeter``: the first limit crossed, naming the stage it stopped (``where``)."""
    if not limits(spec):
        return None

    def over(used: Reading) -> str | None:
        spent = {"cpu_seconds": used.cpu_seconds, "gpu_seconds": used.gpu_seconds, "wall_seconds": time.time() - started}
        for key, usage, per, unit in LIMITS:
            limit = getattr(spec, key)
            if limit is not None and spent[usage] / per > limit:
                return (f"budget.{key}: the night used {spent[usage] / per:.3g} {unit}, over the limit {limit:g}; "
                        f"stopped during {where()}: nothing was published, and its staging is kept, so a re-run with a "
                        "larger budget resumes")
        return None

    return over
