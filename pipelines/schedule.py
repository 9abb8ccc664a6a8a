"""The nightly deployment: ``nightly_flow`` on the config's cron schedule, one run at a time."""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from .config import PipelineConfig, as_dict
from .flows import nightly_flow


def build_deployment(cfg: PipelineConfig):
    """A ``RunnerDeployment`` for ``prefect.serve``: one concurrency slot, so nights never overlap; a night due
    while the last one runs waits for it (``schedule.overlap: queue``) or is cancelled (``cancel``)."""
    strategy = {"queue": ConcurrencyLimitStrategy.ENQUEUE, "cancel": ConcurrencyLimitStrategy.CANCEL_NEW}[cfg.schedule.overlap]
    return nightly_flow.to_deployment(
        name=cfg.name,
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        parameters={"config": as_dict(cfg)},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
        description=f"Nightly AIGC pipeline '{cfg.name}': preprocess, train, generate into {cfg.output}",
        tags=["aigc", "nightly"],
    )
