"""The whole nightly flow (real Prefect test server, real local Ray) on the tiny config, read back as a
consumer would: schema, counts, decodable labelled PNGs, lineage, and the other readers."""

import io
import json

import pyarrow.dataset as pads
import pyarrow.parquet as pq
from PIL import Image

from jobs.store import schema
from tests.conftest import RUN_DATE


def published(store):
    return pads.dataset(store.path("generated", f"date={RUN_DATE}"), format="parquet")


def test_flow_returns_the_stage_summaries(tiny_night):
    cfg, store, result = tiny_night
    assert result.run_date == RUN_DATE and result.status == "published"
    pre = result.preprocess.counts
    assert pre["inputs"] == 500 == pre["accepted"] + pre["rejected"]
    assert [m.trained.model.name for m in result.models] == ["tiny-gan", "tiny-gpt"]
    assert all(m.promoted and m.version == m.candidate for m in result.models)  # tonight's versions passed the gate ...
    kept = result.to_dict()["models"]  # what report.json keeps of each model's training
    assert [(m["train"]["model"]["version"], m["train"]["promoted"]) for m in kept] == [(m.candidate, False) for m in result.models]
    checks = [c for m in result.models for c in m.promotion.checks]  # ... of tiny.yaml's absolute bounds
    assert {(c["model"], c["metric"]) for c in checks} == {("tiny-gan", "fd"), ("tiny-gan", "memorisation_rate"),
                                                          ("tiny-gpt", "distinct_2"), ("tiny-gpt", "copy_rate")}
    assert all(c["passed"] and c["kind"] == "absolute" for c in checks)
    gate = result.gate  # and so did tonight's output, through every filter but the label check
    assert gate["passed"] and len(gate["checks"]) == 4 and all(c["passed"] for c in gate["checks"])
    gen = result.generate
    assert gen.manifest["filters"]["enabled"] and gen.manifest["filters"]["near_copy"]
    assert gen.rows == 18 and gen.rejected == 0 and gen.by_modality == {"image": 12, "text": 6}


def test_independent_models_train_at_the_same_time_when_the_cluster_holds_both(tiny_night):
    """The suite's Ray has 4 CPUs: both tiny models' groups of 2 one-CPU workers fit at once, so the night trains
    them side by side (each one's Ray Train start-up and registration overlap the other's steps)."""
    from datetime import datetime, timedelta

    from jobs.store import registry

    _, store, result = tiny_night
    spans = []
    for m in result.models:
        card = registry.resolve(store, m.name, m.candidate).card
        end = datetime.fromisoformat(card.created_at)
        spans.append((end - timedelta(seconds=card.wall_seconds), end))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, spans  # the two trainings overlap in time
    assert {s.stage for s in result.stages} >= {"train:tiny-gan", "train:tiny-gpt"}


def test_partition_has_the_design_schema_and_requested_counts(tiny_night):
    _, store, _ = tiny_night
    ds = published(store)
    assert ds.schema.remove_metadata().equals(schema.GENERATED)
    df = ds.to_table().to_pandas()
    assert len(df) == 18 and df["id"].is_unique
    images, texts = df[df.modality == "image"], df[df.modality == "text"]
    assert images.groupby("label").size().to_dict() == {"0": 4, "1": 4, "2": 4}
    assert texts.groupby("prompt").size().to_dict() == {"A ": 3, "The ": 3}
    assert images["text"].isna().all() and texts["image"].isna().all()
    assert all(t.startswith(p) for t, p in zip(texts["text"], texts["prompt"]))


def test_every_image_decodes_and_is_labelled_as_ai_generated(tiny_night):
    _, store, _ = tiny_night
    df = published(store).to_table().to_pandas()
    for row in df[df.modality == "image"].itertuples():
        im = Image.open(io.BytesIO(row.image["bytes"]))
        im.load()
        assert im.size == (row.width, row.height) == (16, 16) and im.mode == row.mode == "L"
        label = json.loads(im.text["provenance"])
        assert im.text["ai_generated"] == "true" and label["content_id"] == row.id
        assert label["model"] == f"{row.model_name}@{row.model_version}"


def test_every_row_carries_lineage_seed_and_provenance(tiny_night):
    _, store, result = tiny_night
    df = published(store).to_table().to_pandas()
    versions = {m.name: m.candidate for m in result.models}
    for col in ("run_id", "model_name", "model_family", "model_version", "checkpoint_sha256", "dataset_version",
                "seed", "sampler", "provenance", "created_at", "request_id"):
        assert df[col].notna().all(), col
    assert (df["model_version"] == df["model_name"].map(versions)).all()
    assert (df["dataset_version"] == result.preprocess.dataset_version).all()
    assert df["provenance"].map(lambda p: json.loads(p)["ai_generated"]).all()
    assert str(df["created_at"].dt.tz) == "UTC" and (df["run_date"].astype(str) == RUN_DATE).all()
    texts = df[df.modality == "text"]
    assert texts["sampler"].map(lambda s: json.loads(s)["max_new_tokens"]).eq(12).all()
    assert texts["quality"].map(lambda q: 0 <= q["distinct_2"] <= 1).all()


def test_manifest_matches_the_files(tiny_night):
    _, store, _ = tiny_night
    manifest = store.read_json("manifests/generated", f"{RUN_DATE}.json")
    assert manifest["rows"] == 18 and manifest["by_request"] == {"copy": 6, "digits": 12}
    partition = store.path("generated", f"date={RUN_DATE}")
    assert sum(pq.read_metadata(f"{partition}/{f['path']}").num_rows for f in manifest["files"]) == 18
    assert set(manifest["models"]) == {"tiny-gan", "tiny-gpt"}


def test_other_readers_see_the_same_rows(tiny_night, ray_local):
    import pandas as pd
    import ray

    _, store, _ = tiny_night
    path = store.path("generated", f"date={RUN_DATE}")
    assert len(pd.read_parquet(path)) == 18
    assert ray.data.read_parquet(path).count() == 18


def test_flow_ran_one_task_per_source_and_left_a_summary_artifact(tiny_night):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    cfg, store, result = tiny_night

    async def read():
        async with get_client() as client:
            nights = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"])), limit=200)
            (night,) = [r for r in nights if r.parameters["config"]["output"] == cfg.output]  # this root's one night
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[night.id])))
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[night.id])))
            return [r.name for r in runs], arts

    names, arts = asyncio.run(read())
    reads = sorted(n for n in names if n.startswith("read-"))
    assert reads == ["read-builtin:digits", "read-builtin:text-corpus"]  # one task per source, each once
    assert names.count("train-tiny-gan") == names.count("train-tiny-gpt") == 1 and names.count("curate-" + RUN_DATE) == 1
    artifacts = {k: [a.data for a in arts if a.key == k] for k in ("curated-dataset", "nightly-report", "nightly-figures")}
    (curated,) = artifacts["curated-dataset"]
    assert "| reject reason | rows |" in curated and result.preprocess.dataset_version in curated
    assert result.report == store.display("reports", f"run_date={RUN_DATE}", "index.html")
    (report,) = artifacts["nightly-report"]
    assert result.report in report and "status **published**" in report
    (table,) = [str(a) for a in artifacts["nightly-figures"]]  # a table artifact: one row per model and figure
    assert "tiny-gan" in table and "conditional_accuracy" in table and "distinct_2" in table


def test_the_gate_keeps_a_version_with_non_finite_metrics_out_of_production(tiny_night):
    import shutil

    from jobs.store import registry
    from pipelines.flows import gate_candidate

    cfg, store, _ = tiny_night
    current = registry.resolve(store, "tiny-gan").version
    bad = "00000000-000000-nan"
    shutil.copytree(store.path("models", "tiny-gan", current), store.path("models", "tiny-gan", bad))
    card = store.read_json("models", "tiny-gan", current, "model_card.json")
    store.write_json({**card, "version": bad, "final_metrics": {**card["final_metrics"], "d_loss": float("nan")}},
                     "models", "tiny-gan", bad, "model_card.json")
    try:
        out = gate_candidate(cfg, "tiny-gan", bad, registry.resolve(store, "tiny-gan", bad).card.final_metrics)
        assert out.promoted is False and out.evaluation is None and "d_loss" in out.failures[0]  # not even evaluated
        assert registry.resolve(store, "tiny-gan").version == current
        assert gate_candidate(cfg, "tiny-gan", current, registry.resolve(store, "tiny-gan").card.final_metrics).promoted
    finally:
        store.delete("models", "tiny-gan", bad)


def test_hugging_face_datasets_decodes_the_images(tiny_night, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    _, store, _ = tiny_night
    files = [f.path for f in published(store).get_fragments()]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert isinstance(ds.features["image"], datasets.Image)
    images = ds.filter(lambda r: r["modality"] == "image")
    assert len(images) == 12 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in images["image"])
    # our hand-written feature spec is what datasets derives itself (image aside)
    own = datasets.Features.from_arrow_schema(schema.GENERATED.remove_metadata()).to_dict()
    assert {k: v for k, v in schema.hf_features(schema.GENERATED).items() if k != "image"} == \
        {k: v for k, v in own.items() if k != "image"}
