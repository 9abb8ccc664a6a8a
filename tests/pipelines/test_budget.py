"""What a night costs, and its budget, on real nights: the manifest and report record each stage's reserved
CPU-/GPU-seconds and rows per CPU-second; a night whose estimate is over budget is refused before any work; a
night that runs over stops, publishes nothing, keeps its staging, and a re-run with a larger budget publishes."""

import re
import shutil
from pathlib import Path

from jobs.store.storage import Store
from pipelines.cli import main
from tests.conftest import RUN_DATE, TINY_CONFIG


def copy_of(store, tmp_path, *ignore):
    root = tmp_path / "root"
    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("checkpoints", *ignore))
    return Store(str(root))


def test_each_night_records_what_each_stage_reserved_in_its_manifest_and_report(tiny_night):
    _, store, _ = tiny_night
    report = store.read_json("reports", f"run_date={RUN_DATE}", "report.json")
    total = report["cost"]["total"]
    assert total["cpu_seconds"] > 0 and total["wall_seconds"] > 0 and total["gpu_seconds"] == 0
    assert report["cost"]["sampled"] is True and len(total["nodes"]) == 1
    stages = {s["stage"]: s for s in report["stages"]}
    for name in ("preprocess", "generate", "gate", "publish"):
        assert stages[name]["cpu_seconds"] is not None and stages[name]["cpu_seconds"] <= total["cpu_seconds"] + 1e-6
    assert stages["generate"]["rows_per_cpu_second"] == round(stages["generate"]["rows"] / stages["generate"]["cpu_seconds"], 3)
    assert stages["train:tiny-gan"]["cpu_seconds"] > 0  # two training workers held CPUs
    manifest = store.read_json("manifests/generated", f"{RUN_DATE}.json")
    assert [s["stage"] for s in manifest["cost"]["stages"]][-2:] == ["generate", "gate"]  # written as publish began
    assert manifest["cost"]["total"]["cpu_seconds"] <= total["cpu_seconds"]
    page = store.read_bytes("reports", f"run_date={RUN_DATE}", "index.html").decode()
    assert "<h2>Cost</h2>" in page and "CPU-s reserved" in page and 'data-chart="cost/hours"' in page


def test_a_night_whose_estimate_is_over_budget_is_refused_before_any_work(tiny_night, tmp_path, capsys):
    _, store, _ = tiny_night
    copy = copy_of(store, tmp_path)
    args = ["nightly", "--config", str(TINY_CONFIG), "--out", copy.root, "--date", "2026-11-26"]
    assert main([*args, "--set", "budget.cpu_hours=0.00001"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"NightRefused: 2026-11-26 not started: budget.cpu_hours: tonight's estimate is [\d.e-]+ CPU-hours "
                     rf"\(the costliest of the last 1 nights under this ROOT: {RUN_DATE}\), over the limit 1e-05", err), err
    assert not list(Path(copy.root, "staging").rglob("*2026-11-26*"))  # nothing was read, trained or generated
    report = copy.read_json("reports", "run_date=2026-11-26", "report.json")
    assert report["status"] == "refused" and report["cost"]["estimate"]["from_nights"] == [RUN_DATE]


def test_a_night_over_its_budget_stops_publishes_nothing_keeps_its_staging_and_a_larger_budget_publishes(
        tiny_night, tmp_path, capsys):
    _, store, _ = tiny_night
    copy = copy_of(store, tmp_path, "reports")  # no earlier report: no estimate, only the running check
    args = ["nightly", "--config", str(TINY_CONFIG), "--out", copy.root, "--date", "2026-11-25"]
    assert main([*args, "--set", "budget.wall_minutes=0.03"]) == 1  # 1.8 s: reading the sources takes longer
    err = capsys.readouterr().err
    assert re.search(r"NightOverBudget: budget.wall_minutes: the night used [\d.]+ minutes, over the limit 0.03; "
                     r"stopped during stage \S+: nothing was published, and its staging is kept", err), err
    assert not copy.exists("generated", "date=2026-11-25")
    report = copy.read_json("reports", "run_date=2026-11-25", "report.json")
    assert report["status"] == "stopped" and report["cost"]["over"].startswith("budget.wall_minutes")
    assert report["stages"][-1]["note"].startswith("failed: NightOverBudget")
    page = copy.read_bytes("reports", "run_date=2026-11-25", "index.html").decode()
    assert 'class="badge bad">stopped<' in page and 'OVER: budget.wall_minutes: the night used' in page
    assert list(Path(copy.root, "staging").rglob("*2026-11-25*")), "the stopped night's staging must be kept"
    assert main([*args, "--set", "budget.wall_minutes=30"]) == 0
    out = capsys.readouterr().out
    assert copy.exists("generated", "date=2026-11-25") and re.search(r"cost\s+[\d.e-]+ CPU-hours", out)
