"""The usage meter on a real local Ray: it integrates what Ray has reserved (a task holding two CPUs shows as
two CPU-seconds a second, on its node), sees the object store fill, and a budget it checks stops the main
thread while it waits on Ray. The estimate and the checks of a budget are pure functions."""

import time

import numpy as np
import pytest
import ray

from jobs.runtime import budget
from jobs.runtime.spec import BudgetSpec
from jobs.runtime.usage import NightOverBudget, Reading, UsageMeter, between


@ray.remote(num_cpus=2)
def _hold(seconds: float) -> int:
    time.sleep(seconds)
    return 1


def test_the_meter_integrates_reserved_cpus_per_node_and_the_object_store_peak(ray_local):
    meter = UsageMeter(interval=0.2).start()
    try:
        before = meter.reading()
        held = time.time()
        ray.get(_hold.remote(2.0))
        held = time.time() - held
        blob = ray.put(np.zeros(8 << 20, dtype=np.uint8))  # 8 MiB in the object store
        time.sleep(0.6)
        used = between(before, meter.reading(), meter.peak_since(before.at))
        del blob
    finally:
        meter.stop()
    # two CPUs were reserved for the task's 2 s at least, and never more than the 4 the instance has
    assert 2 * 2.0 * 0.8 <= used["cpu_seconds"] <= 4 * (held + 0.6 + 0.5)
    assert used["gpu_seconds"] == 0.0
    (node,) = used["nodes"].values()
    assert node["cpu_seconds"] == pytest.approx(used["cpu_seconds"])
    assert used["object_store_peak_bytes"] >= 8 << 20
    assert meter.unavailable is None


def test_a_budget_stops_the_main_thread_waiting_on_ray_and_a_shield_holds_it_off(ray_local):
    meter = UsageMeter(interval=0.2, check=lambda r: "budget.cpu_hours: over" if r.cpu_seconds > 1.0 else None).start()
    started = time.time()
    with pytest.raises(KeyboardInterrupt):  # Ray re-raises the budget's NightOverBudget as a KeyboardInterrupt
        ray.get(_hold.remote(60))
    meter.stop()
    assert meter.stopped_because == "budget.cpu_hours: over" and time.time() - started < 30
    shielded = UsageMeter(interval=0.2, check=lambda r: "budget.cpu_hours: over" if r.cpu_seconds > 1.0 else None).start()
    shielded.shield()
    assert ray.get(_hold.remote(2.0)) == 1  # a shielded meter records the overrun but interrupts nothing
    shielded.stop()
    assert shielded.stopped_because == "budget.cpu_hours: over"


def night(run_date, cpu, wall, status="published"):
    return {"run_date": run_date, "status": status,
            "cost": {"total": {"cpu_seconds": cpu, "gpu_seconds": 0.0, "wall_seconds": wall}}}


def test_the_estimate_is_the_costliest_of_the_last_published_nights():
    spec = BudgetSpec(cpu_hours=1.0, history_nights=2)
    nights = [night("2026-11-01", 9000, 60), night("2026-11-02", 1800, 600), night("2026-11-03", 3600, 30),
              night("2026-11-04", 99999, 9999, status="failed")]
    guess = budget.estimate(spec, nights)
    assert guess["from_nights"] == ["2026-11-02", "2026-11-03"]  # the last two published; a failed night is not one
    assert (guess["cpu_seconds"], guess["wall_seconds"]) == (3600, 600)
    assert budget.refusal(spec, guess) is None  # 1.0 CPU-hours: not over
    why = budget.refusal(BudgetSpec(cpu_hours=0.5, history_nights=2), guess)
    assert why.startswith("budget.cpu_hours: tonight's estimate is 1 CPU-hours") and "over the limit 0.5" in why
    assert "budget.wall_minutes" in budget.refusal(BudgetSpec(wall_minutes=5), guess)
    assert budget.estimate(spec, []) is None and budget.refusal(spec, None) is None
    over = night("2026-11-05", 99999, 60)
    over["cost"]["over"] = "budget.cpu_hours: ... (crossed while publishing)"
    assert budget.estimate(spec, nights + [over])["from_nights"] == ["2026-11-02", "2026-11-03"]  # it would refuse all after it


def test_the_running_check_names_the_limit_crossed_and_where():
    check = budget.checker(BudgetSpec(cpu_hours=0.001, gpu_hours=1.0), time.time(), lambda: "stage train:gan")
    assert check(Reading(time.time(), cpu_seconds=3.0)) is None
    why = check(Reading(time.time(), cpu_seconds=3.7))
    assert why.startswith("budget.cpu_hours: the night used 0.00103 CPU-hours, over the limit 0.001; stopped during "
                          "stage train:gan")
    assert budget.checker(BudgetSpec(), time.time(), str) is None  # no limits: nothing to check
    assert isinstance(NightOverBudget("x"), KeyboardInterrupt)
