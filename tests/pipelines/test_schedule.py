"""The nightly deployment, registered with the real Prefect test server and read back."""

import asyncio

from prefect.client.orchestration import get_client

from pipelines.config import as_dict
from pipelines.schedule import build_deployment


def test_deployment_runs_nightly_on_the_configured_cron(tiny_config, prefect_server):
    cfg = tiny_config.model_copy(update={"schedule": tiny_config.schedule.model_copy(
        update={"cron": "30 3 * * *", "timezone": "Europe/Paris"})})
    deployment = build_deployment(cfg)
    deployment_id = deployment.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    stored = asyncio.run(read())
    assert stored.name == cfg.name
    assert [(s.schedule.cron, s.schedule.timezone) for s in stored.schedules] == [("30 3 * * *", "Europe/Paris")]
    assert stored.parameters["config"] == as_dict(cfg)
    assert stored.global_concurrency_limit is not None and stored.global_concurrency_limit.limit == 1
