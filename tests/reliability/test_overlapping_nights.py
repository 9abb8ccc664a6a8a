"""Scenario 10: nights never run in parallel on one output root; the schedule gives one run per local day."""

import asyncio
import inspect
import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobs.store.lease import LOCK, NightLocked, night_lease
from jobs.store.storage import Store
from tests.conftest import TINY_CONFIG


def test_a_second_night_on_the_same_root_is_refused_while_the_first_holds_the_lease(tmp_path):
    store = Store(str(tmp_path))
    with night_lease(store, "2026-11-20") as me:
        assert store.read_json(*LOCK)["token"] == me["token"]
        with pytest.raises(NightLocked, match=r"another night holds .*nightly\.json: run date 2026-11-20"):
            with night_lease(store, "2026-11-21"):
                pass
    assert not store.exists(*LOCK)  # released
    with night_lease(store, "2026-11-21"):
        pass


def test_a_lease_left_by_a_dead_or_ancient_night_is_taken_over(tmp_path):
    import socket

    store = Store(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for holder in ({"host": socket.gethostname(), "pid": int(dead.stdout), "taken_at": datetime.now(timezone.utc).isoformat()},
                   {"host": "elsewhere", "pid": 1, "taken_at": (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()}):
        store.write_json({"token": "old", "run_date": "2026-11-19", **holder}, *LOCK)
        with night_lease(store, "2026-11-20") as me:
            assert store.read_json(*LOCK)["token"] == me["token"]
    store.write_json({"token": "live", "host": "elsewhere", "pid": 1, "run_date": "2026-11-19",
                      "taken_at": datetime.now(timezone.utc).isoformat()}, *LOCK)
    with pytest.raises(NightLocked, match="on elsewhere"):  # another machine's recent lease is respected
        with night_lease(store, "2026-11-20"):
            pass


def test_the_nightly_flow_refuses_to_start_beside_a_running_night(tmp_path, prefect_server, tiny_config):
    from pipelines.config import as_dict
    from pipelines.flows import nightly_flow

    store = Store(str(tmp_path))
    config = as_dict(tiny_config.model_copy(update={"output": str(tmp_path)}))
    with night_lease(store, "2026-11-20"):
        with pytest.raises(NightLocked):
            nightly_flow(config, "2026-11-20")
    assert store.listdir() == ["_locks"] and store.listdir("_locks") == []  # it did nothing: no data, no report


def _local_days(cron: str, tz: str, start: date, days: int) -> list[datetime]:
    """The run times of the deployment ``aigc serve`` builds from a config with this schedule (Prefect's
    server computes the dates of the schedule the deployment carries)."""
    from prefect.server.schemas.schedules import CronSchedule

    from pipelines.config import load_config
    from pipelines.schedule import build_deployment

    cfg = load_config(TINY_CONFIG, [f"schedule.cron={cron}", f"schedule.timezone={tz}"])
    (deployed,) = build_deployment(cfg).schedules
    assert (deployed.schedule.cron, deployed.schedule.timezone) == (cron, tz)
    zone = ZoneInfo(tz)
    first = datetime(start.year, start.month, start.day, tzinfo=zone)
    dates = CronSchedule(cron=deployed.schedule.cron, timezone=deployed.schedule.timezone,
                         day_or=deployed.schedule.day_or).get_dates(n=days + 5, start=first, end=first + timedelta(days=days))
    dates = asyncio.run(dates) if inspect.isawaitable(dates) else dates
    return [d.astimezone(zone) for d in dates]


@pytest.mark.parametrize("tz, spring, autumn", [("America/New_York", date(2026, 3, 8), date(2026, 11, 1)),
                                                ("Europe/Paris", date(2026, 3, 29), date(2026, 10, 25))])
@pytest.mark.parametrize("cron", ["0 2 * * *", "30 1 * * *", "30 2 * * *"])
def test_the_schedule_runs_once_per_local_day_across_both_dst_changes(tz, spring, autumn, cron):
    for change in (spring, autumn):
        runs = _local_days(cron, tz, change - timedelta(days=3), 7)
        assert [r.date() for r in runs] == [change - timedelta(days=3) + timedelta(days=i) for i in range(7)], runs


def test_the_deployment_queues_or_cancels_an_overlapping_night_per_config(tiny_config, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from pipelines.schedule import build_deployment

    for overlap, strategy in (("cancel", ConcurrencyLimitStrategy.CANCEL_NEW), ("queue", ConcurrencyLimitStrategy.ENQUEUE)):
        cfg = tiny_config.model_copy(update={"name": f"overlap-{overlap}", "schedule": tiny_config.schedule.model_copy(
            update={"overlap": overlap})})
        deployment_id = build_deployment(cfg).apply()

        async def read():
            async with get_client() as client:
                return await client.read_deployment(deployment_id)

        stored = asyncio.run(read())
        assert stored.global_concurrency_limit.limit == 1
        assert stored.concurrency_options.collision_strategy == strategy
    assert json.loads(json.dumps(stored.parameters))["config"]["schedule"]["overlap"] == "queue"


@pytest.mark.parametrize("entry", ["deployment", "nightly_from_config"])
def test_a_night_queued_past_midnight_or_started_late_writes_the_date_it_was_due(entry, tmp_path, prefect_server,
                                                                                  ray_local):
    """A night due at 00:30 Berlin (23:30 UTC the day before) that starts days late, as a run that waited
    behind a long night or a busy worker does: it takes its scheduled date, not the date it starts on. Its
    source is missing, so it fails in seconds, leaving the failed night's report under the date it took."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from pipelines.config import load_config
    from pipelines.flows import nightly_flow, nightly_from_config
    from pipelines.schedule import build_deployment

    overrides = ["schedule.cron=30 0 * * *", "schedule.timezone=Europe/Berlin", f"name=late-{entry}",
                 f"sources=[{{kind: image_folder, path: {tmp_path / 'not-there'}}}]", f"output={tmp_path / 'root'}"]
    cfg = load_config(TINY_CONFIG, overrides)
    due = datetime(2026, 11, 20, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert due.astimezone(ZoneInfo("UTC")).date() == date(2026, 11, 19) != datetime.now(timezone.utc).date()

    deployment_id = build_deployment(cfg).apply() if entry == "deployment" else None

    async def create():
        async with get_client() as client:
            if deployment_id:  # what `aigc serve`'s scheduler creates
                return await client.create_flow_run_from_deployment(deployment_id, state=Scheduled(scheduled_time=due))
            return await client.create_flow_run(nightly_from_config, state=Scheduled(scheduled_time=due), parameters={
                "config_path": str(TINY_CONFIG), "overrides": overrides})

    flow_run = asyncio.run(create())
    with pytest.raises(FileNotFoundError, match="not-there"):
        run_flow(nightly_flow if entry == "deployment" else nightly_from_config, flow_run=flow_run,
                 parameters=flow_run.parameters)
    store = Store(str(tmp_path / "root"))
    assert store.listdir("reports") == ["run_date=2026-11-20"]
    assert json.loads(store.read_bytes("reports", "run_date=2026-11-20", "report.json"))["status"] == "failed"
