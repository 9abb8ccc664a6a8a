"""Scenarios 1 and 9: faults injected once (marker files) on real Ray and real Prefect.

A killed generation actor and a stage that fails after its side effect must neither lose nor duplicate a
row, and leave nothing half-written where readers look.
"""

import asyncio
import shutil

import pandas as pd
import pyarrow.parquet as pq

from jobs.generate.spec import RequestSpec
from jobs.runtime import faults


def _published_files(store, date):
    """Every file a reader listing the partition sees (not only *.parquet)."""
    import pyarrow.fs as pafs

    infos = store.fs.get_file_info(pafs.FileSelector(store.path("generated", f"date={date}"), recursive=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def test_a_killed_generation_actor_loses_and_duplicates_nothing(tiny_night, tmp_path, monkeypatch):
    from jobs.generate.run import run_generation

    cfg, store, _ = tiny_night
    date, marker = "2026-08-01", str(tmp_path / "kill")
    monkeypatch.setenv("AIGC_FAULT", "generator-kill:1:150")  # SIGKILL the first actor to pass 150 rows, once
    monkeypatch.setenv("AIGC_FAULT_MARKER", marker)
    spec = cfg.generate.model_copy(update={"batch_size": 16, "concurrency": 2, "requests": [
        RequestSpec(id="digits", model="tiny-gan", labels=[str(d) for d in range(10)], per_label=40)]})
    result = run_generation(spec, store, date, cfg.name)

    assert faults.fired(marker) == 1  # the actor really died once
    rows = pd.read_parquet(store.path("generated", f"date={date}"))
    assert len(rows) == 400 and rows["id"].is_unique and result.rows == 400
    assert result.manifest["generated"] == 400 and result.manifest["rejected"] == 0
    files = _published_files(store, date)
    assert files and all(f.endswith(".parquet") and ".tmp-" not in f for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 400  # every file is whole
    assert not [e for e in store.listdir("staging", "generated") if date in e]


def test_a_stage_failing_after_its_side_effect_is_retried_and_commits_once(tiny_night, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from jobs.store.storage import Store
    from pipelines.config import as_dict, load_config
    from pipelines.flows import nightly_flow
    from tests.conftest import TINY_CONFIG

    _, source, _ = tiny_night
    store = Store(str(tmp_path / "root"))
    shutil.copytree(source.root, store.root, ignore=shutil.ignore_patterns("checkpoints"))
    marker = str(tmp_path / "flaky")
    monkeypatch.setenv("AIGC_FAULT", "generate-after-staging:2")  # fails twice after writing its rows
    monkeypatch.setenv("AIGC_FAULT_MARKER", marker)
    state = nightly_flow(as_dict(load_config(TINY_CONFIG, output=store.root)), "2026-08-02", return_state=True)
    night = state.result()

    assert faults.fired(marker) == 2 and night.status == "published"
    rows = pd.read_parquet(store.path("generated", "date=2026-08-02"))
    assert len(rows) == 18 and rows["id"].is_unique
    manifest = store.read_json("manifests/generated", "2026-08-02.json")
    assert manifest["resumed"]["rows_found"] == 18  # the retries found the rows already written: none regenerated
    assert manifest["rows"] == 18 and manifest["generated"] == 18

    async def runs():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))

    generate = [r for r in asyncio.run(runs()) if r.name.startswith("generate")]
    assert len(generate) == 1 and generate[0].run_count == 3 and generate[0].state.is_completed()
