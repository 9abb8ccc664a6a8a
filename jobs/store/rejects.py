"""The error budget over refused rows: past it a stage publishes nothing, whatever it wrote."""

from __future__ import annotations


class ErrorBudgetExceeded(ValueError):
    """More inputs or generated rows were rejected than the config's error budget allows: nothing was published.
    A ValueError, so Prefect does not retry it (the same inputs would be rejected again)."""


def check_error_budget(key: str, rejected: int, total: int, by_reason: dict[str, int], budget: float | None,
                       what: str) -> None:
    """Raises ``ErrorBudgetExceeded`` naming the config ``key`` when ``rejected / total`` is over ``budget``."""
    if budget is None or total == 0 or rejected <= budget * total:
        return
    top = ", ".join(f"{reason} {n:,}" for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:3])
    raise ErrorBudgetExceeded(f"{key}: {rejected:,} of {total:,} {what} rejected ({rejected / total:.1%} > "
                              f"{budget:.1%}; {top}); nothing was published")
