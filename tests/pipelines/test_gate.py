"""The nightly quality gate on real nights: trends across nights, refusal, production kept, cached re-runs.

Every test works on its own copy of the tiny night's ROOT (trained models, curated data, one published
night), so it needs no training of its own unless it asks for a new candidate.
"""

import asyncio
import json
import shutil

import pytest

from tests.conftest import RUN_DATE, TINY_CONFIG


def _copy_of(tiny_night, tmp_path):
    from jobs.storage import Store

    _, store, _ = tiny_night
    root = tmp_path / "root"
    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("checkpoints"))
    return Store(str(root))


def _night(store, run_date, overrides=(), **kwargs):
    from pipelines.config import as_dict, load_config
    from pipelines.flows import nightly_flow

    cfg = load_config(TINY_CONFIG, list(overrides), output=store.root)
    return nightly_flow(as_dict(cfg), run_date, return_state=True, **kwargs)


def _task_states(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return {r.name: r.state.name for r in asyncio.run(read())}


def test_second_night_reuses_the_models_publishes_its_own_partition_and_a_trend(tiny_night, tmp_path):
    store = _copy_of(tiny_night, tmp_path)
    first = store.read_json("generated/_manifests", f"run_date={RUN_DATE}.json")
    state = _night(store, "2026-11-21", ["gate.relative={fd: 10.0, distinct_2: 10.0}"])
    night = state.result()

    assert night["status"] == "published" and not any(m["trained"] for m in night["models"])
    assert all(m["decision"].startswith("up to date") for m in night["models"])
    assert store.read_json("generated/_manifests", f"run_date={RUN_DATE}.json") == first  # yesterday untouched
    manifest = store.read_json("generated/_manifests", "run_date=2026-11-21.json")
    assert manifest["rows"] == 18 and manifest["gate"]["passed"] is True
    relative = [c for c in manifest["gate"]["checks"] if c["kind"] == "relative"]
    assert {(c["model"], c["metric"]) for c in relative} == {("tiny-gan", "fd"), ("tiny-gpt", "distinct_2")}
    base = manifest["gate"]["baseline"]["tiny-gan"]
    assert base["run_date"] == RUN_DATE and base["figures"] == first["gate"]["figures"]["tiny-gan"]
    fd = next(c for c in relative if c["metric"] == "fd")
    assert fd["bound"] == pytest.approx(base["figures"]["fd"] * 11)
    figures = manifest["gate"]["figures"]["tiny-gan"]
    assert {"fd", "kid", "precision", "recall", "conditional_accuracy", "memorisation_rate", "augmentation_lift"} <= set(figures)
    assert {"distinct_1", "distinct_2", "self_similarity", "copy_rate"} <= set(manifest["gate"]["figures"]["tiny-gpt"])

    report = json.loads(store.read_bytes("reports", "run_date=2026-11-21", "report.json"))
    assert report["status"] == "published" and report["gate"]["figures"] == manifest["gate"]["figures"]
    html = store.read_bytes("reports", "run_date=2026-11-21", "index.html").decode()
    assert RUN_DATE in html and "2026-11-21" in html  # the trend spans both nights
    assert html.count("data:image/png;base64,") >= 3  # a strip per requested label
    states = _task_states(state.state_details.flow_run_id)
    assert "generate" in {n.split("-")[0] for n in states} and not any(n.startswith("train-") for n in states)


def test_a_refused_night_publishes_nothing_keeps_production_and_a_rerun_reuses_what_succeeded(tiny_night, tmp_path):
    from jobs import registry
    from pipelines.flows import NightRefused

    store = _copy_of(tiny_night, tmp_path)
    production = registry.resolve(store, "tiny-gan").version
    before = sorted(store.listdir("generated")), store.read_bytes("generated/_manifests", f"run_date={RUN_DATE}.json")
    new_seed = "models.0.seed=7"  # a config change: tonight trains a tiny-gan candidate
    with pytest.raises(NightRefused, match=r"2026-11-22 not published: .*tiny-gan: fd [\d.]+ > 0 \(absolute bound\)"):
        _night(store, "2026-11-22", [new_seed, "gate.absolute={fd: 0.0}"]).result()

    assert registry.resolve(store, "tiny-gan").version == production  # the candidate failed its evaluation
    candidates = [c["version"] for c, _ in registry.versions(store, "tiny-gan") if c["version"] != production]
    assert len(candidates) == 1 and store.exists("models", "tiny-gan", candidates[0], "evaluation.json")
    assert (sorted(store.listdir("generated")), store.read_bytes("generated/_manifests", f"run_date={RUN_DATE}.json")) == before
    assert not store.exists("generated", "run_date=2026-11-22") and not store.exists("generated/_rejected", "run_date=2026-11-22")
    assert [e for e in store.listdir("generated/_staging") if "2026-11-22" in e] == []
    report = json.loads(store.read_bytes("reports", "run_date=2026-11-22", "report.json"))
    assert report["status"] == "refused" and "fd" in report["reason"]
    tiny_gan = next(m for m in report["models"] if m["name"] == "tiny-gan")
    assert tiny_gan["trained"] and not tiny_gan["promoted"] and "fd" in tiny_gan["promotion_failures"][0]

    state = _night(store, "2026-11-22", [new_seed])  # bounds loosened: the same night again
    night = state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert states["curate-2026-11-22"] == "Cached" and states["train-tiny-gan"] == "Cached"
    assert night["status"] == "published" and registry.resolve(store, "tiny-gan").version == candidates[0]
    assert store.read_json("generated/_manifests", "run_date=2026-11-22.json")["rows"] == 18


def test_a_failing_stage_fails_the_flow_publishes_nothing_and_still_reports(tiny_night, tmp_path):
    store = _copy_of(tiny_night, tmp_path)
    missing = tmp_path / "no-such-briefs.parquet"
    with pytest.raises(FileNotFoundError):
        _night(store, "2026-11-23", [f"generate.request_tables=[{{path: {missing}}}]"]).result()
    assert not store.exists("generated", "run_date=2026-11-23")
    report = json.loads(store.read_bytes("reports", "run_date=2026-11-23", "report.json"))
    assert report["status"] == "failed" and "FileNotFoundError" in report["reason"]
    assert [s["stage"] for s in report["stages"]][-1] == "generate" and report["stages"][-1]["note"].startswith("failed")
