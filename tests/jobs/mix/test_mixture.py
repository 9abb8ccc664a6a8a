"""Augmented datasets: a real curated dataset (the preprocess job on built-in digits) mixed with generated
partitions written here with ``schema.GENERATED`` (no model is trained); then ``aigc augment`` end to end."""

import os
import re
import shutil
import zlib
from datetime import date, datetime, timezone

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from jobs.data.curate import run_preprocess
from jobs.data.spec import BuiltinSource, PreprocessSpec
from jobs.mix.mixture import MixError, build_mixture, largest_mix, split_count
from jobs.mix.spec import MixSpec
from jobs.store import schema
from jobs.store.png import encode_png
from jobs.store.storage import Store

DAY1, DAY2 = "2026-11-20", "2026-11-21"
LABELS = [str(d) for d in range(10)]


def generated_rows(run_date, model, per_label, texts=0, size=8):
    """Rows shaped like a published night: ``per_label`` 8x8 images per digit, and ``texts`` text rows."""
    rng = np.random.default_rng(zlib.crc32(f"{run_date}|{model}".encode()))  # not hash(): PYTHONHASHSEED varies it
    cols = {f.name: [] for f in schema.GENERATED}
    conditions = [("image", l) for l in LABELS for _ in range(per_label)] + [("text", None)] * texts
    for i, (modality, label) in enumerate(conditions):
        image = None
        if modality == "image":
            image = {"bytes": encode_png(rng.integers(0, 255, (size, size, 1), dtype=np.uint8)), "path": f"{i}.png"}
        values = {"id": f"{run_date}-{model}-{i:04d}", "run_id": f"t:{run_date}", "run_date": date.fromisoformat(run_date),
                  "created_at": datetime(2026, 11, 20, tzinfo=timezone.utc), "modality": modality, "image": image,
                  "width": size if image else None, "height": size if image else None, "mode": "L" if image else None,
                  "text": None if image else "The quick brown fox.", "label": label, "request_id": "r",
                  "model_name": model, "model_version": f"{model}-v1", "dataset_version": "d0", "seed": i}
        for k in cols:
            cols[k].append(values.get(k))
    return schema.table(cols, schema.GENERATED)


def write_partition(store, run_date, table, files=1, area="generated"):
    folder = store.path(area, f"date={run_date}")
    shutil.rmtree(folder, ignore_errors=True)
    store.makedirs(area, f"date={run_date}")
    for k, part in enumerate(np.array_split(np.arange(table.num_rows), files)):
        pq.write_table(table.take(part), f"{folder}/part-{k}.parquet")
    if area == "generated":  # a night is published once its manifest is written
        store.write_json({"run_date": run_date, "rows": table.num_rows, "rejected": 0}, "manifests/generated", f"{run_date}.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ray_local):
    """(store, curated version): digits + a few texts, curated; two generated nights and a rejected partition."""
    store = Store(str(tmp_path_factory.mktemp("mix")))
    sources = [BuiltinSource(kind="builtin", name="digits", limit=150),
               BuiltinSource(kind="builtin", name="text-corpus", limit=40)]
    curated = run_preprocess(sources, PreprocessSpec(resolution=8, val_fraction=0.25), store).dataset_version
    write_partition(store, DAY1, generated_rows(DAY1, "gan-a", per_label=6, texts=5))
    write_partition(store, DAY2, generated_rows(DAY2, "gan-b", per_label=3), files=2)
    write_partition(store, DAY1, generated_rows(DAY1, "gan-bad", per_label=2), area="rejects/generated")
    return store, curated


def read(result):
    return pads.dataset(result.path, format="parquet").to_table().to_pandas()


def curated_ids(store, version, split):
    return set(pads.dataset(store.path("curated", version, split), format="parquet").to_table(columns=["id"])["id"].to_pylist())


def test_split_arithmetic():
    assert split_count(10, 0.25) == (7, 3) and split_count(1, 0.5) == (0, 1) and split_count(5, 0.0) == (5, 0)
    assert largest_mix(0.5, 100, 60) == 120 and largest_mix(0.5, 100, 60, cap=11) == 11
    assert largest_mix(1.0, 0, 7) == 7 and largest_mix(0.0, 9, 0) == 9 and largest_mix(0.5, 0, 9) == 1
    for ratio in (0.1, 0.3, 0.5, 0.9):
        n = largest_mix(ratio, 13, 5)
        real, synthetic = split_count(n, ratio)
        assert real <= 13 and synthetic <= 5 and not all(a <= b for a, b in zip(split_count(n + 1, ratio), (13, 5)))


def test_default_mix_uses_the_latest_night_at_half_synthetic_and_accounts_for_every_row(inputs):
    store, curated = inputs
    result = build_mixture(MixSpec(), store)
    c, df = result.counts, read(result)
    assert result.manifest["spec"]["dates"] == [DAY2] and not result.reused
    syn_in, real_in = c["inputs"]["synthetic"], c["inputs"]["real"]
    assert syn_in["available"] == syn_in["selected"] == c["synthetic"] == 30  # the scarcer pool is used whole
    assert c["real"] == 30 and c["rows"] == len(df) == 60 and df["id"].is_unique
    assert (df["is_synthetic"].sum(), (~df["is_synthetic"]).sum()) == (c["synthetic"], c["real"])
    for side in (syn_in, real_in):
        excluded = sum(v for k, v in side.items() if k.startswith("other_"))
        assert side["read"] == excluded + side["available"] and side["available"] == side["selected"] + side["not_selected"]
        assert sum(v["not_selected"] for v in side["by_label"].values()) == side["not_selected"]
    assert real_in["other_modality"] > 0  # the curated texts were read and counted, not mixed in
    assert real_in["read"] == len(curated_ids(store, curated, "train"))
    assert set(df.loc[df.is_synthetic, "source"]) == {f"generated:{DAY2}"}
    assert set(df.loc[~df.is_synthetic, "source"]) == {f"curated:{curated}"} and df.loc[~df.is_synthetic, "model_name"].isna().all()
    assert result.manifest["sources"]["generated"][0]["model_versions"] == {"gan-b": ["gan-b-v1"]}
    assert 0 < df["is_synthetic"].head(20).sum() < 20  # interleaved, not real rows then synthetic ones
    assert not os.listdir(store.path("staging", "augmented"))  # no buckets or half datasets left behind


def test_per_label_balance_holds_the_ratio_in_every_label_and_val_stays_out(inputs):
    store, curated = inputs
    spec = MixSpec(synthetic_ratio=0.25, balance="per_label", dates=[DAY1, DAY2])
    result = build_mixture(spec, store)
    c, df = result.counts, read(result)
    per_label = df.groupby("label")["is_synthetic"].agg(["size", "sum"])
    assert list(per_label.index) == LABELS and per_label["size"].nunique() == 1 and per_label["sum"].nunique() == 1
    k = int(per_label["size"].iloc[0])
    assert (k - per_label["sum"].iloc[0], per_label["sum"].iloc[0]) == split_count(k, 0.25)
    assert abs(c["synthetic_share"] - 0.25) <= 0.5 / k
    assert {l: (v["real"], v["synthetic"]) for l, v in c["by_label"].items()} == \
        {l: (k - int(s), int(s)) for l, s in per_label["sum"].items()}
    available = {side: {l: v["available"] for l, v in c["inputs"][side]["by_label"].items()} for side in ("real", "synthetic")}
    assert available["synthetic"] == {l: 9 for l in LABELS}
    assert k == min(largest_mix(0.25, available["real"][l], 9) for l in LABELS)  # as many as the scarcest label allows
    assert not set(df["id"]) & curated_ids(store, curated, "val")
    assert not df["id"].str.contains("gan-bad").any()  # refused rows are never read
    assert c["inputs"]["synthetic"]["other_modality"] == 5 and c["inputs"]["synthetic"]["read"] == 95
    every_row = build_mixture(spec.model_copy(update={"split": "all", "synthetic_ratio": 0.0, "balance": "none"}), store)
    assert every_row.counts["inputs"]["real"]["not_selected"] == every_row.counts["synthetic"] == 0
    assert set(read(every_row)["id"]) & curated_ids(store, curated, "val")  # only when asked for


def test_same_inputs_same_version_and_rows_whatever_the_row_order(inputs, tmp_path):
    store, curated = inputs
    spec = MixSpec(synthetic_ratio=0.8, dates=[DAY1], max_rows=40, seed=3)
    first = build_mixture(spec, store)
    again = build_mixture(spec, store)
    assert again.reused and again.mix_version == first.mix_version
    shutil.rmtree(first.path)
    rebuilt = build_mixture(spec, store)
    assert rebuilt.mix_version == first.mix_version and not rebuilt.reused
    assert [f["sha256"] for f in rebuilt.manifest["files"]] == [f["sha256"] for f in first.manifest["files"]]
    assert build_mixture(spec.model_copy(update={"seed": 4}), store).mix_version != first.mix_version

    copy = Store(str(tmp_path))  # the same rows in another order and another file layout
    for area in ("curated", "manifests/curated"):
        shutil.copytree(store.path(area), copy.path(area))
    table = generated_rows(DAY1, "gan-a", per_label=6, texts=5)
    write_partition(copy, DAY1, table.take(np.random.default_rng(0).permutation(table.num_rows)), files=3)
    shuffled = build_mixture(spec, copy)
    assert shuffled.mix_version != first.mix_version  # the partition's files changed
    assert list(read(shuffled)["id"]) == list(read(first)["id"])


def test_models_labels_and_max_rows(inputs):
    store, _ = inputs
    spec = MixSpec(dates=[DAY1, DAY2], models=["gan-a"], labels=[3, 5], max_rows=10, balance="per_label")
    df = read(build_mixture(spec, store))
    assert len(df) == 10 and set(df["label"]) == {"3", "5"}
    assert set(df.loc[df.is_synthetic, "model_name"]) == {"gan-a"}


def test_clear_errors_name_the_setting(inputs, tmp_path):
    store, _ = inputs
    with pytest.raises(MixError, match=r"augment\.dates: no published night 2030-01-01 .*published: 2026-11-20, 2026-11-21"):
        build_mixture(MixSpec(), store, ["2030-01-01"])
    with pytest.raises(ValueError, match=r"augment\.modality: generated 2026-11-21 holds no text rows"):
        build_mixture(MixSpec(modality="text", dates=[DAY2]), store)
    with pytest.raises(MixError, match=r"augment\.models: .* holds no image rows of nope"):
        build_mixture(MixSpec(dates=[DAY1], models=["gan-a", "nope"]), store)
    with pytest.raises(MixError, match=r"augment\.labels"):
        build_mixture(MixSpec(dates=[DAY1], labels=["cat"]), store)
    with pytest.raises(MixError, match=r"augment\.dataset_version: no curated dataset"):
        build_mixture(MixSpec(), Store(str(tmp_path)))
    curated_only = Store(str(tmp_path / "curated-only"))
    for area in ("curated", "manifests/curated"):
        shutil.copytree(store.path(area), curated_only.path(area))
    with pytest.raises(MixError, match=r"augment\.dates: nothing generated"):
        build_mixture(MixSpec(), curated_only)
    write_partition(curated_only, DAY1, generated_rows(DAY1, "big-gan", per_label=2, size=16))
    with pytest.raises(MixError, match=r"images of different sizes would mix \(16x16 L: model big-gan; 8x8 L: curated"):
        build_mixture(MixSpec(), curated_only)


def test_large_outputs_are_split_into_files_in_one_seeded_order(inputs, monkeypatch):
    from jobs.mix import mixture

    store, _ = inputs
    spec = MixSpec(dates=[DAY1], seed=11)
    whole = build_mixture(spec, store)
    ids = list(read(whole)["id"])
    shutil.rmtree(whole.path)
    monkeypatch.setattr(mixture, "FILE_BYTES", 2000)
    parts = build_mixture(spec, store)
    assert parts.mix_version == whole.mix_version and len(parts.manifest["files"]) > 3
    assert sum(f["rows"] for f in parts.manifest["files"]) == parts.counts["rows"] == len(ids)
    assert list(read(parts)["id"]) == ids  # the files, in name order, hold the rows in the same order


def test_hugging_face_datasets_decodes_the_images(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    from PIL import Image

    store, _ = inputs
    result = build_mixture(MixSpec(dates=[DAY2]), store)
    files = [f"{result.path}/{f['path']}" for f in result.manifest["files"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["is_synthetic"].dtype == "bool"
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (8, 8)
    assert sum(ds["is_synthetic"]) == result.counts["synthetic"]


def test_cli_augment_exit_codes_and_summary(inputs, capsys):
    from pipelines.cli import main
    from tests.conftest import TINY_CONFIG

    store, _ = inputs
    args = ["augment", "--config", str(TINY_CONFIG), "--out", store.root]
    assert main([*args, "--set", "augment.nope=1"]) == 2
    assert "augment.nope: unknown key" in capsys.readouterr().err
    assert main([*args, "--date", "2030-01-01"]) == 2
    assert "aigc: error: augment.dates: no published night 2030-01-01" in capsys.readouterr().err
    assert main([*args, "--set", f"augment.dates=[{DAY1}]", "--set", "augment.balance=per_label"]) == 0  # YAML dates
    out = capsys.readouterr().out
    assert "aigc augment: tiny-nightly" in out and "real+synthetic" in out and store.path("augmented") in out
    path = re.search(r"augmented\s+\w+\s+(\S+)", out).group(1)
    assert main(["inspect", path]) == 0 and "augmented dataset" in capsys.readouterr().out
