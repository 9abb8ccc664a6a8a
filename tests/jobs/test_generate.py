"""Generation: request expansion, the actor and encode stages on hand-built batches, and whole runs on a
real local Ray proving the reproducibility rule (batch size and actor count never change a row)."""

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs import registry
from jobs.generate import Generator, encode_batch, expand_requests, row_key, run_generation
from jobs.specs import RequestSpec


def card(modality, classes=()):
    return registry.ModelRef("m", "v1", "models/m/v1", {
        "modality": modality, "family": "f", "config": {"classes": list(classes)}, "sampler_defaults": {"temperature": 0.8}})


def test_row_keys_are_deterministic_and_distinct():
    assert row_key("2026-01-01", "r", 0) == row_key("2026-01-01", "r", 0)
    keys = {row_key(d, r, i) for d in ("2026-01-01", "2026-01-02") for r in ("a", "b") for i in range(50)}
    assert len(keys) == 200 and len({k[0] for k in keys}) == 200 and len({k[1] for k in keys}) == 200


def test_expand_requests_counts_conditions_and_samplers():
    models = {"gan": card("image", ["0", "1", "2"]), "lm": card("text")}
    reqs = [RequestSpec(model="gan", per_label=2),
            RequestSpec(id="brief-7", model="gan", labels=["2"], per_label=3),
            RequestSpec(model="lm", prompts=["Hi", "Yo"], per_prompt=2, temperature=0.5)]
    rows = expand_requests(reqs, models, "2026-11-20")
    assert len(rows) == 6 + 3 + 4 and rows["id"].is_unique
    assert rows[rows.request_id == "req-0"]["label"].tolist() == ["0", "0", "1", "1", "2", "2"]
    assert rows[rows.request_id == "brief-7"]["label"].tolist() == ["2"] * 3
    text = rows[rows.model_name == "lm"]
    assert text["prompt"].tolist() == ["Hi", "Hi", "Yo", "Yo"]
    assert json.loads(text["sampler"].iloc[0]) == {"temperature": 0.5}  # the request overrides the default
    assert rows["id"].tolist() == expand_requests(reqs, models, "2026-11-20")["id"].tolist()
    assert set(rows["id"]).isdisjoint(expand_requests(reqs, models, "2026-11-21")["id"])


def test_expand_requests_refuses_what_it_cannot_do():
    models = {"gan": card("image", ["0", "1"]), "lm": card("text")}
    with pytest.raises(ValueError, match=r"requests.0.labels: \['7'\]"):
        expand_requests([RequestSpec(model="gan", labels=["7"], per_label=1)], models, "2026-11-20")
    with pytest.raises(ValueError, match="per_label needs an image model"):
        expand_requests([RequestSpec(model="lm", per_label=1)], models, "2026-11-20")
    with pytest.raises(ValueError, match="no model named 'x'"):
        expand_requests([RequestSpec(model="x", per_label=1)], models, "2026-11-20")
    with pytest.raises(ValueError, match=r"requests.0.steps: gan \(f\) has no sampler setting 'steps'"):
        expand_requests([RequestSpec(model="gan", per_label=1, steps=20)], models, "2026-11-20")
    with pytest.raises(ValueError, match="share a request id"):
        expand_requests([RequestSpec(id="a", model="gan", per_label=1)] * 2, models, "2026-11-20")


def _partition(store, date):
    return pads.dataset(store.path("generated", f"run_date={date}"), format="parquet").to_table().to_pandas()


def _content(df):
    """id -> hash of what a person sees: decoded pixels or text (PNG metadata names the run, so differs)."""
    def payload(r):
        return np.asarray(Image.open(io.BytesIO(r.image["bytes"]))).tobytes() if r.modality == "image" else r.text.encode()

    return {r.id: hashlib.sha256(payload(r)).hexdigest() for r in df.itertuples()}


def test_batch_size_and_actor_count_never_change_a_row(tiny_night):
    cfg, store, _ = tiny_night
    date = "2026-01-15"
    small = cfg.generate.model_copy(update={"batch_size": 1, "concurrency": 1})
    big = cfg.generate.model_copy(update={"batch_size": 64, "concurrency": 2})
    first = run_generation(small, store, date, cfg.name)
    a = _partition(store, date)
    second = run_generation(big, store, date, cfg.name)
    b = _partition(store, date)
    assert first.rows == second.rows == len(a) == len(b) == 18
    assert _content(a) == _content(b)  # same ids, same pixels and texts
    assert a.set_index("id")["content_sha256"].to_dict() == b.set_index("id")["content_sha256"].to_dict()
    assert (a.set_index("id")["content_sha256"] == pd.Series(_content(a))).all()  # the column hashes the content
    assert a.set_index("id")["seed"].to_dict() == b.set_index("id")["seed"].to_dict()
    assert set(a["run_id"]) == {first.run_id} and set(b["run_id"]) == {second.run_id}  # replaced, not appended
    assert not [p for p in store.files("generated/_staging") if "run_date" in p]  # nothing left in staging


def test_failing_rows_are_quarantined_not_dropped(tiny_night, tmp_path):
    cfg, store, _ = tiny_night
    ref = registry.resolve(store, "tiny-gan")
    gen = Generator(store.root, {"tiny-gan": (ref.version, ref.path)}, use_gpu=False)
    batch = pd.DataFrame({"id": ["good", "bad"], "request_id": ["r", "r"], "model_name": ["tiny-gan"] * 2,
                          "modality": ["image"] * 2, "label": ["1", "not-a-class"], "prompt": [None, None],
                          "seed": [1, 2], "sampler": ["{}", "{}"]})
    out = gen(batch)
    assert out["error"].isna().tolist() == [True, False] and "not among" in out.loc[1, "error"]
    run = {"run_id": "r1", "run_date": "2026-01-01", "models": {"tiny-gan": {
        "version": ref.version, "family": "dcgan", "checkpoint_sha256": "x", "dataset_version": "d"}}}
    table = encode_batch(out, run, str(tmp_path), "rejected")
    assert table.column("id").to_pylist() == ["good"]
    rejected = pads.dataset(tmp_path / "rejected", format="parquet").to_table().to_pandas()
    assert rejected["id"].tolist() == ["bad"] and rejected["reason"].tolist() == ["generation_error"]
    png = table.column("image").to_pylist()[0]["bytes"]
    im = Image.open(io.BytesIO(png))
    assert im.text["ai_generated"] == "true" and json.loads(im.text["provenance"])["content_id"] == "good"


def test_missing_production_model_is_a_clear_error(tmp_path, tiny_config, ray_local):
    from jobs.storage import Store

    with pytest.raises(FileNotFoundError, match="has no production version"):
        run_generation(tiny_config.generate, Store(str(tmp_path)), "2026-01-01", "x")


def test_request_tables_pass_their_columns_through_to_every_row(tiny_night, tmp_path):
    from jobs.specs import GenerateSpec, RequestTableSpec

    cfg, store, _ = tiny_night
    csv = tmp_path / "briefs.csv"
    csv.write_text("request_id,model,label,count,sku,price,launch\n"
                   "p-1,tiny-gan,3,2,SKU-003,9.5,2026-12-01\n"
                   "p-2,tiny-gan,7,1,SKU-007,,2026-12-02\n")
    jsonl = tmp_path / "copy.jsonl"
    jsonl.write_text('{"request_id": "c-1", "model": "tiny-gpt", "prompt": "Sale: ", "count": 2, "max_new_tokens": 5,'
                     ' "campaign": "winter", "sku": "SKU-003"}\n')
    spec = GenerateSpec(requests=[RequestSpec(model="tiny-gan", labels=["1"], per_label=1)], concurrency=1,
                        request_tables=[RequestTableSpec(path=str(csv)), RequestTableSpec(path=str(jsonl))])
    result = run_generation(spec, store, "2026-03-01", cfg.name)
    rows = _partition(store, "2026-03-01").sort_values(["request_id", "id"])
    assert result.rows == len(rows) == 1 + 3 + 2 and result.manifest["by_request"] == {"c-1": 2, "p-1": 2, "p-2": 1, "req-0": 1}
    assert rows[rows.request_id != "req-0"].groupby("request_id")["sku"].agg(set).to_dict() == {
        "c-1": {"SKU-003"}, "p-1": {"SKU-003"}, "p-2": {"SKU-007"}}
    assert rows.loc[rows.request_id == "req-0", ["sku", "campaign", "price"]].isna().all().all()
    assert rows.loc[rows.request_id == "p-1", "label"].tolist() == ["3", "3"]
    assert rows.loc[rows.request_id == "c-1", "campaign"].tolist() == ["winter", "winter"]
    assert all(t.startswith("Sale: ") for t in rows.loc[rows.request_id == "c-1", "text"])
    assert json.loads(rows.loc[rows.request_id == "c-1", "sampler"].iloc[0])["max_new_tokens"] == 5
    types = pads.dataset(store.path("generated", "run_date=2026-03-01"), format="parquet").schema
    assert str(types.field("price").type) == "double" and str(types.field("launch").type) == "date32[day]"
    briefs = pd.read_csv(csv)  # the campaign tool joins its briefs back on request_id
    joined = briefs.merge(rows[["request_id", "id"]], on="request_id")
    assert joined.groupby("request_id").size().to_dict() == {"p-1": 2, "p-2": 1}


def test_bad_request_tables_are_clear_errors_naming_the_row(tiny_night, tmp_path):
    from jobs.specs import GenerateSpec, RequestTableSpec

    cfg, store, _ = tiny_night

    def run(text, name="t.csv"):
        (tmp_path / name).write_text(text)
        spec = GenerateSpec(request_tables=[RequestTableSpec(path=str(tmp_path / name))])
        return run_generation(spec, store, "2026-03-02", cfg.name)

    with pytest.raises(ValueError, match="missing column.s. count"):
        run("request_id,model,label\na,tiny-gan,1\n")
    with pytest.raises(ValueError, match="row 2: count: Input should be greater than or equal to 1"):
        run("request_id,model,label,count\na,tiny-gan,1,1\nb,tiny-gan,1,0\n")
    with pytest.raises(ValueError, match="row 1.model: no model named 'nope'"):
        run("request_id,model,label,count\na,nope,1,1\n")
    with pytest.raises(ValueError, match="column.s. seed would shadow generated columns"):
        run("request_id,model,label,count,seed\na,tiny-gan,1,1,5\n")
    with pytest.raises(FileNotFoundError, match="request table: .*missing.csv not found"):
        run_generation(GenerateSpec(request_tables=[RequestTableSpec(path=str(tmp_path / "missing.csv"))]), store,
                       "2026-03-02", cfg.name)
    assert not store.exists("generated", "run_date=2026-03-02")
