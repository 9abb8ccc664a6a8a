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
    from jobs.store.storage import Store

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


def test_a_backfill_with_a_failing_date_publishes_the_others_with_a_partition_and_trend_each(tiny_night, tmp_path,
                                                                                           capsys, monkeypatch):
    from pipelines.cli import main

    store = _copy_of(tiny_night, tmp_path)
    first = store.read_json("manifests/generated", f"{RUN_DATE}.json")
    # the first date's generate task fails on every try (three: Prefect retries it twice); the faults are then spent
    monkeypatch.setenv("AIGC_FAULT", "generate-after-staging:3")
    monkeypatch.setenv("AIGC_FAULT_MARKER", str(tmp_path / "fault"))
    code = main(["nightly", "--config", str(TINY_CONFIG), "--out", store.root, "--date", "2026-11-19..2026-11-22",
                 "--set", "gate.relative={fd: 10.0, distinct_2: 10.0}"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 4 nights failed: 2026-11-19: ConnectionError" in captured.err
    assert "(the others: 2026-11-20 published, 2026-11-21 published, 2026-11-22 published)" in captured.err
    assert not store.exists("generated", "date=2026-11-19") and not store.exists("manifests/generated", "2026-11-19.json")
    assert json.loads(store.read_bytes("reports", "run_date=2026-11-19", "report.json"))["status"] == "failed"
    assert not store.exists("rejects/generated", "date=2026-11-19")
    (kept,) = [e for e in store.listdir("staging/generated") if e.startswith("date=2026-11-19.")]  # a re-run resumes it
    assert store.files("staging/generated", kept, suffix=".parquet")

    assert store.read_json("manifests/generated", f"{RUN_DATE}.json")["files"] == first["files"]  # re-run: not regenerated
    for night in ("2026-11-21", "2026-11-22"):
        manifest = store.read_json("manifests/generated", f"{night}.json")
        assert manifest["rows"] == 18 and manifest["gate"]["passed"] is True
        report = json.loads(store.read_bytes("reports", f"run_date={night}", "report.json"))
        assert report["status"] == "published" and report["gate"]["figures"] == manifest["gate"]["figures"]
        assert all(not m["trained"] and m["decision"].startswith("up to date") for m in report["models"])
    relative = [c for c in manifest["gate"]["checks"] if c["kind"] == "relative"]  # 2026-11-22 against 2026-11-21
    assert {(c["model"], c["metric"]) for c in relative} == {("tiny-gan", "fd"), ("tiny-gpt", "distinct_2")}
    base = manifest["gate"]["baseline"]["tiny-gan"]
    yesterday = store.read_json("manifests/generated", "2026-11-21.json")
    assert base["run_date"] == "2026-11-21" and base["figures"] == yesterday["gate"]["figures"]["tiny-gan"]
    fd = next(c for c in relative if c["metric"] == "fd")
    assert fd["bound"] == pytest.approx(base["figures"]["fd"] * 11)
    figures = manifest["gate"]["figures"]
    assert {"fd", "kid", "precision", "recall", "conditional_accuracy", "memorisation_rate", "augmentation_lift"} <= set(figures["tiny-gan"])
    assert {"distinct_1", "distinct_2", "self_similarity", "copy_rate", "real_words", "real_texts"} <= set(figures["tiny-gpt"])
    assert 0 <= figures["tiny-gpt"]["real_words"] <= 1 and 0 <= figures["tiny-gpt"]["real_texts"] <= 1
    lift = report["augmentation_lift"]["tiny-gan"]  # the mean of three classifier pairs, each with its own rows
    assert lift["repeats"] == 3 and len(lift["lifts"]) == 3 and lift["lift_sd"] is not None
    assert lift["lift"] == pytest.approx(sum(lift["lifts"]) / 3, abs=1e-4) == pytest.approx(figures["tiny-gan"]["augmentation_lift"], abs=1e-4)

    html = store.read_bytes("reports", "run_date=2026-11-22", "index.html").decode()
    trend = html.split('data-chart="tiny-gan/fd"', 1)[1].split("</svg>", 1)[0]
    assert trend.count('class="point"') == 3 and RUN_DATE in trend and "2026-11-22" in trend  # the three nights
    assert html.count("data:image/png;base64,") >= 3  # a strip per requested label


def test_a_refused_night_publishes_nothing_keeps_production_and_a_rerun_reuses_what_succeeded(tiny_night, tmp_path):
    from jobs.store import registry
    from pipelines.flows import NightRefused

    store = _copy_of(tiny_night, tmp_path)
    production = registry.resolve(store, "tiny-gan").version
    before = sorted(store.listdir("generated")), store.read_bytes("manifests/generated", f"{RUN_DATE}.json")
    new_seed = "models.0.seed=7"  # a config change: tonight trains a tiny-gan candidate
    with pytest.raises(NightRefused, match=r"2026-11-22 not published: .*tiny-gan: fd [\d.]+ > 0 \(absolute bound\)"):
        _night(store, "2026-11-22", [new_seed, "gate.absolute={fd: 0.0}"]).result()

    assert registry.resolve(store, "tiny-gan").version == production  # the candidate failed its evaluation
    candidates = [c.version for c, _ in registry.versions(store, "tiny-gan") if c.version != production]
    assert len(candidates) == 1 and store.exists("models", "tiny-gan", candidates[0], "evaluation.json")
    assert (sorted(store.listdir("generated")), store.read_bytes("manifests/generated", f"{RUN_DATE}.json")) == before
    assert not store.exists("generated", "date=2026-11-22") and not store.exists("rejects/generated", "date=2026-11-22")
    assert [e for e in store.listdir("staging/generated") if "2026-11-22" in e] == []
    report = json.loads(store.read_bytes("reports", "run_date=2026-11-22", "report.json"))
    assert report["status"] == "refused" and "fd" in report["reason"]
    tiny_gan = next(m for m in report["models"] if m["name"] == "tiny-gan")
    assert tiny_gan["trained"] and not tiny_gan["promoted"] and "fd" in tiny_gan["promotion_failures"][0]

    state = _night(store, "2026-11-22", [new_seed])  # bounds loosened: the same night again
    night = state.result()
    states = _task_states(state.state_details.flow_run_id)
    assert states["curate-2026-11-22"] == "Cached" and states["train-tiny-gan"] == "Cached"
    assert night.status == "published" and registry.resolve(store, "tiny-gan").version == candidates[0]
    assert store.read_json("manifests/generated", "2026-11-22.json")["rows"] == 18


def test_a_failing_stage_fails_the_flow_publishes_nothing_and_still_reports(tiny_night, tmp_path):
    store = _copy_of(tiny_night, tmp_path)
    missing = tmp_path / "no-such-briefs.parquet"
    with pytest.raises(FileNotFoundError):
        _night(store, "2026-11-23", [f"generate.request_tables=[{{path: {missing}}}]"]).result()
    assert not store.exists("generated", "date=2026-11-23")
    report = json.loads(store.read_bytes("reports", "run_date=2026-11-23", "report.json"))
    assert report["status"] == "failed" and "FileNotFoundError" in report["reason"]
    assert [s["stage"] for s in report["stages"]][-1] == "generate" and report["stages"][-1]["note"].startswith("failed")


def test_re_running_a_night_replaces_its_partition_whole(tiny_night, tmp_path):
    import pandas as pd

    store = _copy_of(tiny_night, tmp_path)
    before = set(store.listdir("generated", f"date={RUN_DATE}"))
    night = _night(store, RUN_DATE, ["generate.requests.0.per_label=2"]).result()  # 6 digits instead of 12

    assert night.status == "published"
    rows = pd.read_parquet(store.path("generated", f"date={RUN_DATE}"))
    assert len(rows) == 6 + 6 and rows["id"].is_unique and (rows["modality"] == "image").sum() == 6
    assert not before & set(store.listdir("generated", f"date={RUN_DATE}"))  # no file of the old partition left
    assert store.read_json("manifests/generated", f"{RUN_DATE}.json")["rows"] == 12
    assert json.loads(store.read_bytes("reports", f"run_date={RUN_DATE}", "report.json"))["generate"]["rows"] == 12


def test_promotion_is_judged_against_production_on_shared_seeds_and_reuses_its_evaluation_until_settings_change(
        tiny_night, tmp_path):
    from jobs.store import registry
    from pipelines.config import load_config
    from pipelines.flows import gate_candidate

    store = _copy_of(tiny_night, tmp_path)
    production = registry.resolve(store, "tiny-gan").version
    saved = store.read_json("models", "tiny-gan", production, "evaluation.json")  # the night's promotion wrote it
    candidate = "29991231-000000-same-weights"
    shutil.copytree(store.path("models", "tiny-gan", production), store.path("models", "tiny-gan", candidate))
    store.delete("models", "tiny-gan", candidate, "evaluation.json")
    card = store.read_json("models", "tiny-gan", production, "model_card.json")
    store.write_json({**card, "version": candidate}, "models", "tiny-gan", candidate, "model_card.json")
    fd = saved["figures"]["fd"]
    # production's saved evaluation is what the candidate is judged against: doctored to a quarter of its fd
    store.write_json({**saved, "figures": {**saved["figures"], "fd": fd / 4}}, "models", "tiny-gan", production, "evaluation.json")

    cfg = load_config(TINY_CONFIG, ["gate.relative={fd: 0.5}"], output=store.root)
    out = gate_candidate(cfg, "tiny-gan", candidate, card["final_metrics"])
    assert out.baseline["version"] == production and out.baseline["figures"]["fd"] == fd / 4
    assert out.evaluation["fd"] == pytest.approx(fd, rel=1e-6)  # the same weights on the same seeds: the same figure
    (rel,) = [c for c in out.checks if c["kind"] == "relative"]
    assert rel["metric"] == "fd" and rel["bound"] == pytest.approx(fd / 4 * 1.5) and rel["passed"] is False
    assert out.promoted is False and "fd" in out.failures[0] and "relative bound" in out.failures[0]
    assert registry.resolve(store, "tiny-gan").version == production
    assert store.read_json("models", "tiny-gan", candidate, "evaluation.json")["figures"]["fd"] == out.evaluation["fd"]

    # other evaluation settings: neither saved evaluation applies; both are computed again, on the new seed set
    cfg = load_config(TINY_CONFIG, ["gate.relative={fd: 0.5}", "gate.samples_per_label=6"], output=store.root)
    out = gate_candidate(cfg, "tiny-gan", candidate, card["final_metrics"])
    again = store.read_json("models", "tiny-gan", production, "evaluation.json")
    assert again["settings"]["samples_per_label"] == 6 and again["figures"]["fd"] != fd / 4
    assert out.baseline["figures"]["fd"] == again["figures"]["fd"] == pytest.approx(out.evaluation["fd"], rel=1e-6)
    assert out.promoted is True and registry.resolve(store, "tiny-gan").version == candidate


def test_the_deployed_entrypoint_runs_a_whole_night_from_a_config_path(tiny_night, tmp_path):
    """What a work-pool worker runs for ``deploy/prefect.yaml``: its entrypoint string, loaded as Prefect loads
    it, with a config path and overrides as the deployment's parameters."""
    from pathlib import Path

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    store = _copy_of(tiny_night, tmp_path)
    repo = Path(__file__).resolve().parents[2]
    (deployment, *_) = yaml.safe_load((repo / "deploy" / "prefect.yaml").read_text())["deployments"]
    module, name = deployment["entrypoint"].split(":")
    flow = load_flow_from_entrypoint(f"{repo / module}:{name}")
    night = flow(config_path=str(TINY_CONFIG), run_date="2026-11-24", overrides=[f"output={store.root}"])
    assert night.status == "published" and night.run_date == "2026-11-24"
    assert store.read_json("manifests/generated", "2026-11-24.json")["rows"] == 18
    assert json.loads(store.read_bytes("reports", "run_date=2026-11-24", "report.json"))["status"] == "published"


def test_nightly_refresh_recomputes_the_cached_stages_and_regenerates_a_published_night(tiny_night, tmp_path, capsys):
    import pandas as pd

    from pipelines.cli import main

    store = _copy_of(tiny_night, tmp_path)
    args = ["nightly", "--config", str(TINY_CONFIG), "--out", store.root, "--date", RUN_DATE]
    files = set(store.listdir("generated", f"date={RUN_DATE}"))
    first = pd.read_parquet(store.path("generated", f"date={RUN_DATE}")).set_index("id")
    before = first["content_sha256"]
    assert main(args) == 0  # this root's first run of the night: it fills the stage cache, regenerates nothing
    assert "already published from the same requests, models and settings" in capsys.readouterr().out
    assert set(store.listdir("generated", f"date={RUN_DATE}")) == files
    plain = _flow_runs_of(store.root)[-1]
    assert main([*args, "--refresh"]) == 0
    refreshed = _flow_runs_of(store.root)[-1]
    assert _task_states(plain)[f"curate-{RUN_DATE}"] == "Completed"
    assert _task_states(refreshed)[f"curate-{RUN_DATE}"] == "Completed"  # not the cached result of the run before
    assert main(args) == 0 and _task_states(_flow_runs_of(store.root)[-1])[f"curate-{RUN_DATE}"] == "Cached"
    again = pd.read_parquet(store.path("generated", f"date={RUN_DATE}")).set_index("id")
    assert again["created_at"].min() > first["created_at"].max()  # regenerated: every row made anew ...
    assert set(store.listdir("generated", f"date={RUN_DATE}")) == files  # ... into files named by their ids ...
    assert again["content_sha256"].sort_index().equals(before.sort_index())  # ... with the very same rows


def _flow_runs_of(root):
    """Ids of the nightly flow runs on ``root``, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"])),
                                               sort=FlowRunSort.START_TIME_ASC, limit=200)

    return [r.id for r in asyncio.run(read()) if r.parameters["config"]["output"] == root]
