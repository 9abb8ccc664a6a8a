"""Every reader people use, pointed at a dataset root with its default (or hive) options, reads exactly the
published rows, with ``run_date`` as a date: pandas, pyarrow, Polars, DuckDB, Ray Data, Hugging Face
``datasets``. The root holds two published nights with refused rows (under ``ROOT/rejects``), a curated
version and an augmented mix; what each reader returns is checked against the ids in the files the
manifests list, read one file at a time."""

from __future__ import annotations

import datetime
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.generate.run import run_generation
from jobs.generate.spec import FilterSpec, RequestSpec
from jobs.mix.mixture import build_mixture
from jobs.mix.spec import MixSpec
from jobs.store import layout
from jobs.store.cards import write_cards
from jobs.store.spec import CardSpec
from jobs.store.storage import Store

NIGHTS = ("2026-10-01", "2026-10-02")


def _ids(store: Store, folder: str, files: list[str]) -> set[str]:
    return {i for f in files for i in pq.read_table(store.path(folder, f), columns=["id"]).column("id").to_pylist()}


@pytest.fixture(scope="module")
def root(tiny_night, tmp_path_factory):
    """A ROOT of its own (the tiny night's models and curated data copied in), two nights published with
    refused rows (every 8-token text is too short for ``min_chars: 9``), an augmented mix, and the cards."""
    cfg, source, _ = tiny_night
    store = Store(str(tmp_path_factory.mktemp("readers")))
    for area in ("models", "curated", "manifests/curated", "rejects/curated"):
        shutil.copytree(source.path(area), store.path(area))
    requests = [RequestSpec(id="d", model="tiny-gan", labels=["0", "1"], per_label=3),
                RequestSpec(id="t", model="tiny-gpt", prompts=["The "], per_prompt=2, max_new_tokens=8)]
    filters = FilterSpec(min_label_confidence=None, near_copy=False, min_contrast=None, max_repetition=None,
                         max_training_overlap=None, min_chars=9, top_up=False)
    spec = cfg.generate.model_copy(update={"requests": requests, "filters": filters})
    expected, refused, seen = {}, {}, []
    cache = str(tmp_path_factory.mktemp("hf-cache"))  # one cache across the nights, as a user's ~/.cache has
    for night in NIGHTS:
        result = run_generation(spec, store, night, cfg.name)
        assert result.rows == 6 and result.rejected == 2
        expected[night] = _ids(store, layout.generated(night), [f["path"] for f in result.manifest["files"]])
        refused[night] = _ids(store, layout.rejects(layout.GENERATED, layout.night(night)),
                              store.listdir(layout.rejects(layout.GENERATED, layout.night(night))))
        write_cards(store, CardSpec(license="cc-by-4.0", tags=["digits"]), cfg.name)  # as every publish does
        seen.append(_hf_ids(store.path("generated"), cache))
    mix = build_mixture(MixSpec(synthetic_ratio=0.5, dates=list(NIGHTS)), store)
    write_cards(store, CardSpec(license="cc-by-4.0", tags=["digits"]), cfg.name)
    return store, expected, refused, mix, seen


def _hf_ids(path: str, cache: str) -> set[str]:
    import datasets

    return set(datasets.load_dataset(path, split="train", cache_dir=cache)["id"])


def _published(expected: dict[str, set[str]]) -> set[str]:
    return set().union(*expected.values())


def test_the_dataset_root_holds_published_rows_and_its_card_header_only(root):
    store, expected, refused, _, _ = root
    entries = sorted(store.listdir("generated"))
    assert entries == [".huggingface.yaml"] + [f"date={n}" for n in NIGHTS]
    for night in NIGHTS:
        assert len(refused[night]) == 2 and not refused[night] & expected[night]
        assert all(f.endswith(".parquet") for f in store.listdir(layout.generated(night)))
    assert sorted(store.listdir("manifests", "generated")) == [f"{n}.json" for n in NIGHTS]


def test_datasets_never_hands_back_yesterdays_rows(root):
    """``datasets`` caches a card-configured dataset by its card; the card's sizes change with every night,
    so a load after the second night sees both nights, from the same cache as the first load."""
    _, expected, _, _, seen = root
    assert seen == [expected[NIGHTS[0]], expected[NIGHTS[0]] | expected[NIGHTS[1]]]


def test_pandas(root):
    import pandas as pd

    store, expected, _, _, _ = root
    df = pd.read_parquet(store.path("generated"))
    assert len(df) == len(_published(expected)) and set(df["id"]) == _published(expected)
    assert all(isinstance(d, datetime.date) for d in df["run_date"])
    by_night = df.groupby(df["run_date"].astype(str))["id"].agg(set).to_dict()
    assert by_night == expected
    assert (df["date"].astype(str) == df["run_date"].astype(str)).all()  # the hive folder names the same night


def test_pyarrow_hive(root):
    import pyarrow.dataset as pads

    store, expected, _, _, _ = root
    table = pads.dataset(store.path("generated"), partitioning="hive").to_table()
    assert table.schema.field("run_date").type == pa.date32()
    assert sorted(table.column("id").to_pylist()) == sorted(_published(expected))


def test_polars_hive(root):
    import polars as pl

    store, expected, _, _, _ = root
    df = pl.scan_parquet(f"{store.path('generated')}/**/*.parquet", hive_partitioning=True).collect()
    assert df.schema["run_date"] == pl.Date
    assert sorted(df["id"].to_list()) == sorted(_published(expected))
    assert {str(d) for d in df["run_date"].unique().to_list()} == set(NIGHTS)


def test_duckdb_hive(root):
    import duckdb

    store, expected, _, _, _ = root
    rel = duckdb.sql(f"select id, run_date, typeof(run_date) as t from "
                     f"read_parquet('{store.path('generated')}/**/*.parquet', hive_partitioning=true)")
    rows = rel.fetchall()
    assert sorted(r[0] for r in rows) == sorted(_published(expected))
    assert {r[2] for r in rows} == {"DATE"} and {r[1].isoformat() for r in rows} == set(NIGHTS)


def test_ray_data(root, ray_local):
    import ray

    store, expected, _, _, _ = root
    ds = ray.data.read_parquet(store.path("generated"))
    schema = ds.schema()
    assert schema.types[schema.names.index("run_date")] == pa.date32()
    assert sorted(ds.select_columns(["id"]).to_pandas()["id"]) == sorted(_published(expected))


def test_hugging_face_datasets_reads_the_root_the_card_and_pictures(root, tmp_path):
    import datasets
    from PIL import Image

    store, expected, _, mix, _ = root
    cache = str(tmp_path / "hf")
    generated = datasets.load_dataset(store.path("generated"), split="train", cache_dir=cache)
    assert sorted(generated["id"]) == sorted(_published(expected))
    assert generated.features["run_date"] == datasets.Value("date32")
    assert isinstance(generated.features["image"], datasets.Image)
    row = next(r for r in generated if r["modality"] == "image")
    assert isinstance(row["image"], Image.Image) and isinstance(row["run_date"], datetime.date)
    assert datasets.load_dataset("parquet", data_dir=store.path("generated"), split="train",
                                 cache_dir=cache).num_rows == len(_published(expected))

    whole = datasets.load_dataset(store.root, cache_dir=cache)  # ROOT/README.md: the default config is generated
    assert sorted(whole["train"]["id"]) == sorted(_published(expected))
    version = store.read_json(layout.CURATED_LATEST)["dataset_version"]
    counts = store.read_json(layout.manifest("curated", version))["counts"]
    curated = datasets.load_dataset(store.root, "curated", cache_dir=cache)
    assert set(curated) == {"train", "validation"}
    assert (curated["train"].num_rows, curated["validation"].num_rows) == (counts["train"] + counts.get("augmented", 0), counts["val"])
    picture = next(r for r in curated["train"] if r["modality"] == "image")
    assert isinstance(picture["image"], Image.Image)
    mixed = datasets.load_dataset(store.path("augmented", mix.mix_version), split="train", cache_dir=cache)
    assert mixed.num_rows == mix.counts["rows"] and isinstance(mixed[0]["image"], Image.Image)


def test_curated_and_mix_roots_read_with_pandas_without_rejects(root):
    import pandas as pd

    store, _, _, mix, _ = root
    version = store.read_json(layout.CURATED_LATEST)["dataset_version"]
    counts = store.read_json(layout.manifest("curated", version))["counts"]
    curated = pd.read_parquet(store.path("curated", version))
    assert len(curated) == counts["train"] + counts.get("augmented", 0) + counts["val"]
    refused = pd.read_parquet(store.path(layout.rejects(layout.CURATED, version)))
    assert len(refused) == counts["rejected"] and not set(refused["id"]) & set(curated["id"])
    mixed = pd.read_parquet(store.path("augmented", mix.mix_version))
    assert len(mixed) == mix.counts["rows"] and mixed["id"].is_unique


def test_the_card_says_what_the_data_is(root):
    import yaml

    store, expected, refused, _, _ = root
    text = store.read_bytes("README.md").decode()
    _, header, body = text.split("---\n", 2)
    head = yaml.safe_load(header)
    assert head["license"] == "cc-by-4.0" and {"synthetic", "ai-generated", "digits"} <= set(head["tags"])
    assert [c["config_name"] for c in head["configs"]] == ["generated", "curated", "augmented"]
    assert "AI-generated" in body and "aigc regenerate" in body
    for night in NIGHTS:
        manifest = store.read_json(layout.manifest(layout.GENERATED, night))
        assert f"| {night} | {len(expected[night])} | {len(refused[night])} |" in body
        for m in manifest["models"].values():
            assert m["version"] in body and m["checkpoint_sha256"][:16] in body
    local = yaml.safe_load(store.read_bytes("generated", ".huggingface.yaml"))
    assert local["configs"][0]["data_files"] == [{"split": "train", "path": "date=*/*.parquet"}]


def test_card_features_match_what_datasets_writes(root):
    import datasets

    from jobs.store.cards import yaml_features
    from jobs.store.schema import GENERATED, hf_features

    ours = yaml_features(hf_features(GENERATED.remove_metadata()))
    assert ours == datasets.Features.from_dict(hf_features(GENERATED.remove_metadata()))._to_yaml_list()


def test_a_root_in_the_old_layout_is_moved_on_first_use(root, tmp_path):
    """The layout before this one, rebuilt by hand from a copy: nights under ``run_date=``, rejects and
    manifests inside the dataset roots. ``open_root`` moves it, once, and the readers see the same rows."""
    import pandas as pd

    store, expected, refused, _, _ = root
    old = Store(str(tmp_path / "old"))
    shutil.copytree(store.root, old.root)
    version = old.read_json(layout.CURATED_LATEST)["dataset_version"]
    for night in NIGHTS:
        old.move(layout.generated(night), f"generated/run_date={night}")
        old.move(layout.rejects(layout.GENERATED, layout.night(night)), f"generated/_rejected/run_date={night}")
        old.move(layout.manifest(layout.GENERATED, night), f"generated/_manifests/run_date={night}.json")
    old.move(layout.rejects(layout.CURATED, version), f"curated/{version}/rejects")
    old.move(layout.manifest("curated", version), f"curated/{version}/_manifest.json")
    old.move(layout.CURATED_LATEST, "curated/_latest.json")
    old.makedirs("generated/_staging/date=x.abc")
    for f in ("README.md", "generated/.huggingface.yaml"):
        old.delete(f)
    old.write_json({"id": "0123456789abcdef"}, "_root.json")  # as written before layouts had versions

    moved = layout.open_root(old.root)
    assert layout.migrate(old) == []  # once
    assert old.read_json("_root.json")["layout"] == layout.LAYOUT_VERSION
    assert sorted(old.listdir("generated")) == [f"date={n}" for n in NIGHTS]
    assert layout.published_dates(moved) == list(NIGHTS)
    df = pd.read_parquet(old.path("generated"))
    assert set(df["id"]) == _published(expected)
    assert set(pd.read_parquet(old.path("rejects", "generated"))["id"]) == set().union(*refused.values())
    assert not old.exists("curated", "_latest.json") and not old.exists("curated", version, "rejects")
    from jobs.data.curated import resolve_dataset_version, verify_curated

    assert resolve_dataset_version(old) == version
    verify_curated(old, version)
