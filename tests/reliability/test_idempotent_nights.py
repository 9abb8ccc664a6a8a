"""Scenarios 3 and 9: re-running a committed night regenerates nothing; a damaged one is regenerated whole."""

import hashlib
import json
import shutil

import pandas as pd

from jobs.generate.run import run_generation
from tests.conftest import RUN_DATE, TINY_CONFIG


def _content(store, date):
    """id -> hash of the pixels or text (PNG bytes carry the night's provenance time, so not those)."""
    from jobs.store.png import decode_png

    df = pd.read_parquet(store.path("generated", f"date={date}"))
    blob = lambda r: decode_png(r["image"]["bytes"]).tobytes() if r["modality"] == "image" else r["text"].encode()  # noqa: E731
    out = {r["id"]: hashlib.sha256(blob(r)).hexdigest() for _, r in df.iterrows()}
    assert out == dict(zip(df["id"], df["content_sha256"]))  # the column every row carries says the same
    return out


def test_a_finished_date_is_not_regenerated_and_a_damaged_one_is(tiny_night):
    cfg, store, _ = tiny_night
    date = "2026-06-01"
    first = run_generation(cfg.generate, store, date, cfg.name)
    files, content = store.files("generated", f"date={date}"), _content(store, date)

    again = run_generation(cfg.generate, store, date, cfg.name)
    assert again.reused and again.rows == first.rows == len(content) == 18
    assert again.manifest == store.read_json("manifests/generated", f"{date}.json") == first.manifest
    assert store.files("generated", f"date={date}") == files and _content(store, date) == content

    store.fs.delete_file(files[0])  # a partition that lost a file is not "done": it is generated again, whole
    healed = run_generation(cfg.generate, store, date, cfg.name)
    assert not healed.reused and healed.rows == 18 and _content(store, date) == content


def test_re_running_a_committed_night_through_the_flow_regenerates_nothing(tiny_night, tmp_path):
    from jobs.store.storage import Store
    from pipelines.config import as_dict, load_config
    from pipelines.flows import nightly_flow

    _, source, _ = tiny_night
    store = Store(str(tmp_path / "root"))
    shutil.copytree(source.root, store.root, ignore=shutil.ignore_patterns("checkpoints"))
    manifest = store.read_json("manifests/generated", f"{RUN_DATE}.json")
    files = store.files("generated", f"date={RUN_DATE}")

    night = nightly_flow(as_dict(load_config(TINY_CONFIG, output=store.root)), RUN_DATE)
    assert night.status == "published" and night.generate.reused
    assert store.read_json("manifests/generated", f"{RUN_DATE}.json") == manifest
    assert store.files("generated", f"date={RUN_DATE}") == files
    generate = next(s for s in night.stages if s.stage == "generate")
    assert generate.rows == 0 and "nothing regenerated" in generate.note
    assert [s.stage for s in night.stages] == ["preprocess", "generate"]  # no training, gate or publish
    report = json.loads(store.read_bytes("reports", f"run_date={RUN_DATE}", "report.json"))
    assert report["gate"] == manifest["gate"]


def test_cached_stages_never_cross_to_another_or_a_recreated_root(tmp_path, monkeypatch):
    """Prefect's cache outlives a ROOT. The same relative ``output`` in two checkouts, or one ROOT deleted
    (``make clean``) and made again, must miss the cache: its stages' data is not there."""
    from pipelines.config import load_config
    from pipelines.tasks import _curate_key

    cfg = load_config(TINY_CONFIG, output="./runs")
    key = lambda: _curate_key(None, {"cfg": cfg, "run_date": RUN_DATE})  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = key()
    assert key() == first and (tmp_path / "a" / "runs" / "_root.json").exists()  # the same ROOT: a hit
    monkeypatch.chdir(tmp_path / "b")
    assert key() != first  # another checkout's ./runs
    monkeypatch.chdir(tmp_path / "a")
    shutil.rmtree(tmp_path / "a" / "runs")
    assert key() != first  # ./runs deleted and made again
