"""The nightly deployment: ``nightly_flow`` on the config's cron schedule, one run at a time."""

from __future__ import annotations

from prefect.schedules import Cron

from .config import PipelineConfig, as_dict
from .flows import nightly_flow


def build_deployment(cfg: PipelineConfig):
    """A ``RunnerDeployment`` for ``prefect.serve``; ``concurrency_limit=1`` keeps nights from overlapping."""
    return nightly_flow.to_deployment(
        name=cfg.name,
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        parameters={"config": as_dict(cfg)},
        concurrency_limit=1,
        description=f"Nightly AIGC pipeline '{cfg.name}': preprocess, train, generate into {cfg.output}",
        tags=["aigc", "nightly"],
    )
