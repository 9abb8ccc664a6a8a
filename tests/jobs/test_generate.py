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
