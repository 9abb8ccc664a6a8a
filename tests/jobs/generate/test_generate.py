"""Generation: request expansion, the actor and encode stages on hand-built batches, and whole runs on a
real local Ray proving the reproducibility rule (batch size and actor count never change a row)."""

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigc_models import quality as q_math
from jobs.gate.references import References
from jobs.generate import filters
from jobs.generate.actors import FinishingActor, SamplingActor
from jobs.generate.plan import NightRun, expand_requests, row_key
from jobs.generate.run import run_generation
from jobs.generate.spec import RequestSpec
from jobs.store import provenance, registry


def card(modality, classes=()):
    return registry.ModelRef("m", "v1", "models/m/v1", registry.ModelCard(
        name="m", version="v1", modality=modality, family="f", config={"classes": list(classes), "resolution": 8,
        "channels": 1}, parameters=1, dataset_version="d", checkpoint_sha256="x", created_at="2026-01-01T00:00:00+00:00",
        sampler_defaults={"temperature": 0.8}))


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
    with pytest.raises(ValueError, match=r"requests.0.labels: a label is listed twice"):
        expand_requests([RequestSpec(model="gan", labels=["1", "1"], per_label=1)], models, "2026-11-20")
    with pytest.raises(ValueError, match="share a request id"):
        expand_requests([RequestSpec(id="a", model="gan", per_label=1)] * 2, models, "2026-11-20")


def _partition(store, date):
    return pads.dataset(store.path("generated", f"date={date}"), format="parquet").to_table().to_pandas()


def _content(df):
    """id -> hash of what a person sees: decoded pixels or text (PNG metadata names the run, so differs)."""
    def payload(r):
        return np.asarray(Image.open(io.BytesIO(r.image["bytes"]))).tobytes() if r.modality == "image" else r.text.encode()

    return {r.id: hashlib.sha256(payload(r)).hexdigest() for r in df.itertuples()}


def test_batch_size_and_actor_count_never_change_a_row(tiny_night, tmp_path, monkeypatch):
    cfg, store, _ = tiny_night
    date = "2026-01-15"
    # the tiny models sample a batch faster than the next one arrives, so one actor of a pool would do it all:
    # the second run's first two batches take 1.5 s longer, as a real model's do, and the rest reach its other actor
    monkeypatch.setenv("AIGC_FAULT_MARKER", str(tmp_path / "slow"))
    small = cfg.generate.model_copy(update={"batch_size": 1, "concurrency": 1})
    big = cfg.generate.model_copy(update={"batch_size": 4, "concurrency": 2, "max_file_bytes": 64 * 1024,
                                          "row_group_bytes": 32 * 1024})  # files cut by bytes: 8 rows here
    first = run_generation(small, store, date, cfg.name)
    a = _partition(store, date)
    monkeypatch.setenv("AIGC_FAULT", "generator-slow:2")
    second = run_generation(big, store, date, cfg.name, force=True)  # same work: regenerate it anyway
    b = _partition(store, date)
    assert first.rows == second.rows == len(a) == len(b) == 18
    assert first.manifest["actors"]["generators"] == 1 and first.manifest["actors"]["rows_per_generator"] == [18]
    served = second.manifest["actors"]["rows_per_generator"]  # both actors of the second pool sampled rows
    assert second.manifest["actors"]["generators"] == 2 and len(served) == 2 and min(served) > 0 and sum(served) == 18
    assert not store.exists("generated", f"date={date}", "_actors")  # the actors' notes are never published
    assert _content(a) == _content(b)  # same ids, same pixels and texts
    assert a.set_index("id")["content_sha256"].to_dict() == b.set_index("id")["content_sha256"].to_dict()
    assert (a.set_index("id")["content_sha256"] == pd.Series(_content(a))).all()  # the column hashes the content
    assert a.set_index("id")["seed"].to_dict() == b.set_index("id")["seed"].to_dict()
    assert set(a["run_id"]) == {first.run_id} and set(b["run_id"]) == {second.run_id}  # replaced, not appended
    assert not [p for p in store.files("staging/generated") if "date=" in p]  # nothing left in staging
    files = second.manifest["files"]
    assert len(files) >= 3 and all(f["rows"] <= 8 and f["row_groups"] >= f["rows"] / 4 for f in files)
    for f in files:  # the row groups (not the fixed footer: schema and metadata, ~30 KB here) stay under the bounds
        meta = pq.read_metadata(store.path("generated", f"date={date}", f["path"]))
        groups = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        assert max(groups) <= 32 * 1024 and sum(groups) <= 64 * 1024
    assert first.manifest["files"][0]["rows"] > 2  # the default bounds (256 MiB) keep small nights in few files


def test_failing_rows_are_quarantined_not_dropped(tiny_night, tmp_path):
    cfg, store, _ = tiny_night
    ref = registry.resolve(store, "tiny-gan")
    gen = SamplingActor(store.root, {"tiny-gan": ref.version}, use_gpu=False)
    batch = pd.DataFrame({"id": ["good", "bad"], "request_id": ["r", "r"], "model_name": ["tiny-gan"] * 2,
                          "modality": ["image"] * 2, "label": ["1", "not-a-class"], "prompt": [None, None],
                          "seed": [1, 2], "sampler": ["{}", "{}"]})
    out = gen(batch)
    assert out["error"].isna().tolist() == [True, False] and "not among" in out.loc[1, "error"]
    run = NightRun("r1", "2026-01-01", "f" * 64, {"tiny-gan": ref})
    rejected_dir = f"staging/generated/test-{tmp_path.name}"
    table = FinishingActor(store.root, run, rejected_dir)(out)
    assert table.column("id").to_pylist() == ["good"]
    rejected = pads.dataset(store.path(rejected_dir), format="parquet").to_table().to_pandas()
    store.delete(rejected_dir)
    assert rejected["id"].tolist() == ["bad"] and rejected["reason"].tolist() == ["generation_error"]
    assert rejected["stage"].tolist() == ["generate"] and "not among" in rejected["detail"].iloc[0]
    png = table.column("image").to_pylist()[0]["bytes"]
    im = Image.open(io.BytesIO(png))
    assert im.text["ai_generated"] == "true" and json.loads(im.text["provenance"])["content_id"] == "good"
    label = provenance.read(png)  # the PNG and the row carry the same label, with the IPTC source type in XMP
    assert json.loads(table.column("provenance").to_pylist()[0]) == {k: v for k, v in label.items() if k != "xmp"}
    assert label["ai_generated"] and label["model"] == f"tiny-gan@{ref.version}"
    assert label["xmp"]["digital_source_type"] == provenance.DIGITAL_SOURCE_TYPE == label["digital_source_type"]


FILTERS_OFF = dict(enabled=True, min_label_confidence=None, near_copy=False, min_contrast=None, min_chars=0,
                   max_chars=None, max_repetition=None, max_training_overlap=None, blocklist=[])


def test_each_generation_filter_refuses_the_rows_it_names_and_passes_them_when_off(tiny_night, tmp_path):
    """Hand-made model outputs through the real FinishingActor: a training image itself (memorisation), a blank one,
    and texts that copy the training corpus, repeat themselves, hold a blocked word or run too long."""
    from jobs.data.curated import curated_rows, decode_images
    from jobs.generate.spec import FilterSpec

    cfg, store, _ = tiny_night
    gan, gpt = registry.resolve(store, "tiny-gan"), registry.resolve(store, "tiny-gpt")
    train = curated_rows(store, gan.card.dataset_version, "train", "image", None, ["id", "image"])
    copied = decode_images(train.slice(3, 1))[0]  # a training image, pixel for pixel
    refs = References.load(store, gan)
    assert refs.near_copy_threshold > 0
    held_out = decode_images(curated_rows(store, gan.card.dataset_version, "val", "image", None, ["image"]))
    scores = filters.score_images(refs, held_out, [None] * len(held_out))
    drawn = held_out[int(np.argmax([s["nearest_train_distance"] for s in scores]))]  # an unseen real digit: passes
    corpus = [t for t in curated_rows(store, gpt.card.dataset_version, "train", "text", None, ["text"])
              .column("text").to_pylist() if t and len(t) >= 120]
    unique_words = " ".join(f"w{i}x" for i in range(60))  # 60 distinct words: long, with nothing repeated
    rows = [("img-copy", "image", copied, None), ("img-blank", "image", np.full_like(copied, 40), None),
            ("img-fine", "image", drawn, None),
            ("txt-copy", "text", None, corpus[0][:200]),
            ("txt-loop", "text", None, "the cat sat on the mat and " * 6),
            ("txt-blocked", "text", None, "Quiet rivers carry the Zebra past the old mill."),
            ("txt-long", "text", None, unique_words),
            ("txt-fine", "text", None, "Quiet rivers carry small boats past the old mill.")]
    batch = pd.DataFrame({
        "id": [r[0] for r in rows], "request_id": "r", "modality": [r[1] for r in rows],
        "model_name": ["tiny-gan" if r[1] == "image" else "tiny-gpt" for r in rows],
        "label": ["1" if r[1] == "image" else None for r in rows], "prompt": [None if r[1] == "image" else "" for r in rows],
        "seed": range(len(rows)), "sampler": "{}", "error": None,
        "raw": [r[2].tobytes() if r[2] is not None else None for r in rows], "text": [r[3] for r in rows],
        "height": [16 if r[1] == "image" else 0 for r in rows], "width": [16 if r[1] == "image" else 0 for r in rows],
        "channels": [1 if r[1] == "image" else 0 for r in rows]})
    run = NightRun("r1", "2026-01-01", "f" * 64, {m.name: m for m in (gan, gpt)})
    on = FilterSpec(**{**FILTERS_OFF, "near_copy": True, "min_contrast": 0.02, "max_chars": 200, "max_repetition": 0.5,
                       "max_training_overlap": 0.8, "blocklist": ["zebra"]})
    rejected_dir = f"staging/generated/test-{tmp_path.name}"
    accepted = FinishingActor(store.root, run, rejected_dir, on)(batch)
    rejected = pads.dataset(store.path(rejected_dir), format="parquet").to_table().to_pandas().set_index("id")
    store.delete(rejected_dir)
    assert accepted.column("id").to_pylist() == ["img-fine", "txt-fine"]
    assert rejected["reason"].to_dict() == {"img-copy": "near_copy", "img-blank": "blank_image", "txt-copy": "training_copy",
                                            "txt-loop": "repetitive", "txt-blocked": "blocked_term", "txt-long": "too_long"}
    assert (rejected["stage"] == "filter").all()
    assert rejected.loc["img-copy", "quality"]["nearest_train_distance"] == 0.0
    assert rejected.loc["img-copy", "quality"]["nearest_train_id"] == train.column("id")[3].as_py()
    assert rejected.loc["txt-copy", "quality"]["training_overlap"] > 0.8
    assert "zebra" in rejected.loc["txt-blocked", "detail"].lower()

    everything = FinishingActor(store.root, run, rejected_dir, FilterSpec(**FILTERS_OFF))(batch)  # each filter off: all pass
    assert everything.column("id").to_pylist() == [r[0] for r in rows] and not store.exists(rejected_dir)


def test_missing_production_model_is_a_clear_error(tmp_path, tiny_config, ray_local):
    from jobs.store.storage import Store

    with pytest.raises(FileNotFoundError, match="has no production version"):
        run_generation(tiny_config.generate, Store(str(tmp_path)), "2026-01-01", "x")


def test_request_tables_pass_their_columns_through_to_every_row(tiny_night, tmp_path):
    from jobs.generate.spec import GenerateSpec, RequestTableSpec

    cfg, store, _ = tiny_night
    csv = tmp_path / "briefs.csv"
    csv.write_text("request_id,model,label,count,sku,price,launch\n"
                   "p-1,tiny-gan,3,2,SKU-003,9.5,2026-12-01\n"
                   "p-2,tiny-gan,7,1,SKU-007,,2026-12-02\n")
    jsonl = tmp_path / "copy.jsonl"
    jsonl.write_text('{"request_id": "c-1", "model": "tiny-gpt", "prompt": "Sale: ", "count": 2, "max_new_tokens": 5,'
                     ' "campaign": "winter", "sku": "SKU-003"}\n')
    spec = GenerateSpec(requests=[RequestSpec(model="tiny-gan", labels=["1"], per_label=1)], concurrency=1,
                        filters=cfg.generate.filters, request_tables=[RequestTableSpec(path=str(csv)), RequestTableSpec(path=str(jsonl))])
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
    types = pads.dataset(store.path("generated", "date=2026-03-01"), format="parquet").schema
    assert str(types.field("price").type) == "double" and str(types.field("launch").type) == "date32[day]"
    briefs = pd.read_csv(csv)  # the campaign tool joins its briefs back on request_id
    joined = briefs.merge(rows[["request_id", "id"]], on="request_id")
    assert joined.groupby("request_id").size().to_dict() == {"p-1": 2, "p-2": 1}


def test_bad_request_tables_are_clear_errors_naming_the_row(tiny_night, tmp_path):
    from jobs.generate.spec import GenerateSpec, RequestTableSpec

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
    assert not store.exists("generated", "date=2026-03-02")


def test_rows_carry_quality_scores_from_the_models_references(tiny_night):
    cfg, store, _ = tiny_night
    gan = registry.resolve(store, "tiny-gan")
    assert gan.card.quality["classifier"]["classes"] == gan.card.classes
    assert 0 < gan.card.quality["near_copy"]["threshold"] < 1
    rows = _partition(store, "2026-11-20")
    q = pd.DataFrame(rows["quality"].tolist())
    images, texts = q[rows["modality"] == "image"], q[rows["modality"] == "text"]
    assert images["label_confidence"].between(0, 1).all() and images["nearest_train_distance"].between(0, 1).all()
    assert set(images["predicted_label"]) <= set(gan.card.classes)
    train_ids = set(pads.dataset(store.path("curated", gan.card.dataset_version, "train"), format="parquet")
                    .to_table(columns=["id"]).column("id").to_pylist())
    assert set(images["nearest_train_id"]) <= train_ids
    assert texts["repetition"].between(0, 1).all()
    text_rows = rows[rows["modality"] == "text"]
    unjudged = [len(q_math.shingles(t[len(p):])) == 0 for t, p in zip(text_rows["text"], text_rows["prompt"])]
    assert texts["training_overlap"].isna().tolist() == unjudged  # too short to hold a sampled shingle: none, not 0
    gpt = registry.resolve(store, "tiny-gpt")
    junk = "".join("abcdefghijklmnopqrstuvwxyz "[(i * 7919 + i * i) % 27] for i in range(200))
    refs = References.load(store, gpt)  # what the finishing stage holds for the text model
    doc = next(t for t in pads.dataset(store.path("curated", gpt.card.dataset_version, "train"), format="parquet")
               .to_table(columns=["text"]).column("text").to_pylist() if t and len(t) > 200)
    score = lambda text: filters.score_text(refs, text)  # noqa: E731
    assert score(doc)["training_overlap"] == 1.0 and 0.2 < score(doc[:150] + junk)["training_overlap"] < 0.7
    assert score(junk)["training_overlap"] == 0.0 and score("too short")["training_overlap"] is None
    assert score("buy now " * 20)["repetition"] > 0.9
    assert score("the cat the cat the cat")["distinct_2"] == 2 / 5  # word bigrams, as the gate counts them


def test_filters_reject_with_reasons_and_top_up_fills_counts(tiny_night):
    from jobs.generate.spec import FilterSpec

    cfg, store, _ = tiny_night
    date = "2026-04-01"
    requests = [RequestSpec(id="d", model="tiny-gan", labels=["0", "1"], per_label=6),
                RequestSpec(id="t", model="tiny-gpt", prompts=["The "], per_prompt=3, max_new_tokens=8)]
    plain = run_generation(cfg.generate.model_copy(update={"requests": requests}), store, date, cfg.name)
    unfiltered = _partition(store, date).set_index("id")
    conf = pd.DataFrame(unfiltered["quality"].tolist(), index=unfiltered.index)["label_confidence"].dropna()
    threshold = float(conf.median())  # about half of the first draw fails
    filters = FilterSpec(min_label_confidence=threshold, near_copy=False, min_contrast=None, max_repetition=None,
                         max_training_overlap=None, min_chars=9, top_up=True, top_up_rounds=2)  # 8 new tokens < 9
    spec = cfg.generate.model_copy(update={"requests": requests, "filters": filters})
    result = run_generation(spec, store, date, cfg.name)
    m = result.manifest
    published = _partition(store, date)
    rejected = pads.dataset(store.path("rejects/generated", f"date={date}"), format="parquet").to_table().to_pandas()
    assert m["generated"] == len(published) + len(rejected) == m["rows"] + m["rejected"]
    assert m["rejected_by_reason"] == rejected["reason"].value_counts().to_dict()
    assert set(rejected["reason"]) == {"low_label_confidence", "too_short"} and (rejected["stage"] == "filter").all()
    low = rejected[rejected.reason == "low_label_confidence"]
    assert (pd.DataFrame(low["quality"].tolist())["label_confidence"] < threshold).all()
    assert low["image"].map(lambda im: im["bytes"][:8] == b"\x89PNG\r\n\x1a\n").all()  # refused rows keep their content
    assert (pd.DataFrame(published["quality"].tolist())["label_confidence"] >= threshold).all()
    # the rows of the first draw that pass are the very rows of the unfiltered run; replacements are new ids
    first = published[published["id"].isin(unfiltered.index)]
    assert (first.set_index("id")["content_sha256"] == unfiltered.loc[first["id"], "content_sha256"]).all()
    assert len(rejected[rejected.reason == "too_short"]) == 3 * (1 + m["top_up"]["rounds"])  # never passes
    assert m["short_of_request"]["t"] == 3 and "t" not in m["by_request"]
    assert m["top_up"]["rounds"] == 2 and m["top_up"]["extra_rows"] == sum(m["top_up"]["per_round"])
    per_label = published[published.request_id == "d"]["label"].value_counts().to_dict()
    assert sum(per_label.values()) + m["short_of_request"].get("d", 0) == 12 and max(per_label.values()) <= 6
    assert plain.rows == 15


KILLED_NIGHT = """
import os, sys
os.environ["AIGC_FAULT"] = "generate-driver-kill:1:3"  # a finishing actor SIGKILLs the driver after 3 batches
os.environ["AIGC_FAULT_MARKER"] = sys.argv[2] + "/fault"
from pipelines.cli import main
sys.exit(main(["generate", "--config", sys.argv[1], "--out", sys.argv[2], "--date", sys.argv[3],
               "--set", "generate.batch_size=4", "--set", "generate.concurrency=1", "--set", "generate.encode_concurrency=1",
               "--set", "generate.max_file_bytes=30000", "--set", "generate.row_group_bytes=15000", "--refresh",
               "--set", "ray.dashboard=false", "--set", "signing.enabled=false"]))  # as run_generation below: unsigned
"""


def test_a_killed_night_leaves_the_published_partition_alone_and_resumes_to_the_same_rows(tiny_night):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.config import load_config
    from tests.conftest import TINY_CONFIG

    cfg, store, _ = tiny_night
    date = "2026-05-01"
    spec = load_config(TINY_CONFIG, output=store.root, overrides=[
        "generate.batch_size=4", "generate.concurrency=1", "generate.encode_concurrency=1",
        "generate.max_file_bytes=30000", "generate.row_group_bytes=15000"]).generate  # small files: written as it goes
    first = run_generation(spec, store, date, cfg.name)  # the published state the killed run must not touch
    before = _partition(store, date)
    log = Path(store.root) / "killed-night.log"  # a file, not a pipe: the dead driver's Ray processes hold pipes open
    with open(log, "w") as out_file:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_NIGHT, str(TINY_CONFIG), store.root, date],
                                start_new_session=True, stdout=out_file, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=240)
        out = log.read_text()
    finally:  # the killed driver's local Ray processes share its session: take them down too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, out[-2000:]
    staged = [p for p in store.files("staging/generated") if f"date={date}." in p and p.endswith(".parquet")]
    assert staged, "the killed run wrote nothing to resume from"
    written, truncated = {}, []
    for p in staged:  # whole files only: one cut off by the kill is dropped by the resume
        try:
            written[os.path.basename(p)] = set(pq.read_table(p, columns=["id"]).column("id").to_pylist())
        except pa.ArrowInvalid:  # pyarrow's error for a file without a footer, and only that
            truncated.append(p)
    done = set().union(*written.values())
    assert 2 * len(done) >= first.rows, f"killed at {len(done)} of {first.rows} rows: the drill should pass half"
    after_kill = _partition(store, date)
    assert _content(after_kill) == _content(before) and set(after_kill["run_id"]) == {first.run_id}
    assert store.read_json("manifests/generated", f"{date}.json")["files"] == first.manifest["files"]

    resumed = run_generation(spec, store, date, cfg.name, force=True)
    again = _partition(store, date)
    assert resumed.manifest["resumed"]["rows_found"] > 0 and resumed.manifest["generated"] == first.manifest["generated"]
    assert _content(again) == _content(before) and resumed.run_id == first.run_id  # the same rows, once each
    assert again["id"].is_unique and len(again) == first.rows
    assert resumed.manifest["resumed"]["rows_found"] == len(done)
    assert resumed.manifest["resumed"]["truncated_files_dropped"] == len(truncated)  # the same files, counted apart
    files = {os.path.basename(p): p for p in store.files("generated", f"date={date}") if p.endswith(".parquet")}
    for name, ids in written.items():  # the aborted attempt's files are published as they were, not rewritten
        assert set(pq.read_table(files[name], columns=["id"]).column("id").to_pylist()) == ids
    new_ids = [i for n, p in files.items() if n not in written for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(new_ids) == first.rows - len(done) and not set(new_ids) & done  # only the rows not yet done
    assert not [p for p in store.files("staging/generated") if f"date={date}" in p]
