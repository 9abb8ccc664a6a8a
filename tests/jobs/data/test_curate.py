"""Preprocessing: cleaning rules on hand-built batches, then the whole job on a real local Ray."""

import io
import json

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs.data.batches import clean_batch, split_of
from jobs.data.curate import run_preprocess
from jobs.data.curated import resolve_dataset_version
from jobs.data.raw import RAW_COLUMNS
from jobs.data.spec import BuiltinSource, PreprocessSpec
from jobs.store.storage import Store


def png(array, mode="L"):
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def raw(rows):
    df = pd.DataFrame(rows, columns=["source", "input_ref", "modality", "label", "payload", "text"])
    return df.reindex(columns=RAW_COLUMNS).assign(position=range(len(df)))


def test_clean_batch_accepts_normalises_and_rejects_with_reasons():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, 5:15] = 200  # a bright square in the middle of a wide image
    df = raw([
        ["t", "ok.png", "image", "cat", png(rgb, "RGB"), None],
        ["t", "broken.png", "image", "cat", b"definitely not an image", None],
        ["t", "empty.png", "image", "cat", b"", None],
        ["t", "line1", "text", None, None, "  Caf\u0065\u0301\x07 au   lait,\n\tbien   chaud  "],
        ["t", "line2", "text", None, None, " \t "],
        ["t", "line3", "text", None, None, "short"],
    ])
    out = clean_batch(df, PreprocessSpec(resolution=8, channels=1, min_text_chars=10)).to_pandas()
    assert list(out["status"]) == ["ok", "rejected", "rejected", "ok", "rejected", "rejected"]
    assert list(out["reason"].fillna("-")) == ["-", "undecodable", "empty", "-", "empty", "too_short"]
    img = np.asarray(Image.open(io.BytesIO(out.loc[0, "image"]["bytes"])))
    assert img.shape == (8, 8) and out.loc[0, "mode"] == "L"  # center-cropped square, resized, grayscale
    assert img[4, 4] > 150  # the crop kept the bright middle
    assert out.loc[3, "text"] == "Caf\u00e9 au lait, bien chaud"  # NFC, control chars and runs of spaces gone
    assert out["id"].is_unique and out["content_sha256"].notna().sum() == 2


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"id{i}" for i in range(4000)]
    splits = [split_of(i, 0.1, "v1") for i in ids]
    assert splits == [split_of(i, 0.1, "v1") for i in ids]
    assert 0.08 < splits.count("val") / len(ids) < 0.12
    assert splits != [split_of(i, 0.1, "other-salt") for i in ids]


def test_run_preprocess_accounts_for_every_input_and_is_idempotent(tmp_path, ray_local):
    store = Store(str(tmp_path))
    sources = [BuiltinSource(kind="builtin", name="digits", limit=120),
               BuiltinSource(kind="builtin", name="text-corpus", limit=200)]
    spec = PreprocessSpec(resolution=16, val_fraction=0.25)
    first = run_preprocess(sources, spec, store)
    c = first.counts
    assert c["inputs"] == 320 and c["inputs"] == c["accepted"] + c["rejected"] and c["balanced"]
    assert c["accepted"] == c["train"] + c["val"]
    assert c["by_source"]["builtin:digits"] == {"inputs": 120, "accepted": 120, "rejected": 0}
    assert sum(c["by_reason"].values()) == c["rejected"] > 0  # the corpus has short and repeated paragraphs

    root = tmp_path / "curated" / first.dataset_version
    train = pads.dataset(root / "train").to_table().to_pandas()
    val = pads.dataset(root / "val").to_table().to_pandas()
    rejects = pads.dataset(tmp_path / "rejects" / "curated" / first.dataset_version).to_table().to_pandas()
    assert len(train) == c["train"] and len(val) == c["val"] and len(rejects) == c["rejected"]
    assert set(train["id"]).isdisjoint(val["id"]) and set(train["id"]).isdisjoint(rejects["id"])
    dups = rejects[rejects["reason"] == "duplicate"]
    assert len(dups) and dups["detail"].str.startswith("duplicate_of=").all()
    kept = set(train["id"]) | set(val["id"])
    assert dups["detail"].str.removeprefix("duplicate_of=").isin(kept).all()  # the original was kept
    images = train[train["modality"] == "image"]
    assert (images["width"] == 16).all() and images["label"].isin([str(d) for d in range(10)]).all()
    assert not list((tmp_path / "staging" / "curated").iterdir())  # nothing left in staging

    again = run_preprocess(sources, spec, store)
    assert again.reused and again.dataset_version == first.dataset_version
    assert resolve_dataset_version(store) == first.dataset_version
    other = run_preprocess(sources, PreprocessSpec(resolution=8, val_fraction=0.25), store)
    assert other.dataset_version != first.dataset_version and resolve_dataset_version(store) == other.dataset_version


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `aigc preprocess` first"):
        resolve_dataset_version(Store(str(tmp_path)))


def test_own_folders_and_text_files_every_file_accounted(tmp_path, ray_local):
    from jobs.data.spec import ImageFolderSource, TextFilesSource

    photos = tmp_path / "photos"
    for label in ("cat", "dog"):
        (photos / label).mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(photos / "cat" / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(photos / "dog" / "b.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L").save(photos / "dog" / "c.webp")
    (photos / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (photos / "dog" / "notes.txt").write_text("not an image")
    (photos / "dog" / ".DS_Store").write_bytes(b"hidden")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "a.txt").write_bytes("\ufeffFresh bread every single morning.\n\nOur ovens never sleep at all.\n".encode("utf-8"))
    (copy / "b.txt").write_bytes("Crème brûlée made the old way.\n".encode("latin-1"))

    store = Store(str(tmp_path / "root"))
    sources = [ImageFolderSource(kind="image_folder", path=str(photos)),
               TextFilesSource(kind="text_files", path=str(copy / "*.txt"))]
    result = run_preprocess(sources, PreprocessSpec(resolution=8, channels=3, val_fraction=0.0, min_text_chars=5), store)
    c = result.counts
    assert c["by_source"][f"image_folder:{photos}"] == {"inputs": 6, "accepted": 3, "rejected": 3}
    texts = c["by_source"][f"text_files:{copy}/*.txt"]
    assert texts == {"inputs": 4, "accepted": 3, "rejected": 1, "by_encoding": {"latin-1": 1, "utf-8-sig": 3}}
    assert c["by_reason"] == {"empty": 1, "hidden": 1, "undecodable": 1, "unsupported_type": 1}
    assert c["by_label"] == {"cat": 1, "dog": 2}
    train = pads.dataset(tmp_path / "root" / "curated" / result.dataset_version / "train").to_table().to_pandas()
    assert set(train.loc[train.modality == "image", "mode"]) == {"RGB"}
    assert "Crème brûlée made the old way." in set(train["text"])  # Latin-1 fallback, decoded right
    assert "Fresh bread every single morning." in set(train["text"])  # the BOM is gone


def test_tables_symlinks_unicode_names_and_duplicates(tmp_path, ray_local):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.data.spec import ImageFolderSource, TableSource

    rng = np.random.default_rng(1)
    pictures = [png(rng.integers(0, 255, (12, 12), dtype=np.uint8)) for _ in range(3)]
    pq.write_table(pa.table({"img": [pictures[0], pictures[1], None], "cat": ["a", "b", "a"], "sku": [1, 2, 3]}),
                   tmp_path / "catalog.parquet")
    (tmp_path / "copy.csv").write_text("body,tone\nFresh bread every morning,warm\n,flat\nFresh  bread every morning,dup\n")
    folder = tmp_path / "shots"
    (folder / "ñandú").mkdir(parents=True)
    (folder / "ñandú" / "猫 1.png").write_bytes(pictures[2])
    (folder / "ñandú" / "again.png").write_bytes(pictures[0])  # same pixels as the table's first row
    (folder / "ñandú" / "loop").symlink_to(folder)  # a loop back to the root
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(pictures[1])
    (folder / "ñandú" / "out").symlink_to(outside)

    sources = [TableSource(kind="table", path=str(tmp_path / "catalog.parquet"), image_column="img", label_column="cat"),
               TableSource(kind="table", path=str(tmp_path / "copy.csv"), text_column="body"),
               ImageFolderSource(kind="image_folder", path=str(folder))]
    store = Store(str(tmp_path / "root"))
    result = run_preprocess(sources, PreprocessSpec(resolution=8, val_fraction=0.0, min_text_chars=5), store)
    c = result.counts
    assert c["inputs"] == 3 + 3 + 4 == c["accepted"] + c["rejected"]
    assert c["by_reason"] == {"duplicate": 2, "empty": 2, "symlink_loop": 1, "symlink_outside": 1}
    train = pads.dataset(tmp_path / "root" / "curated" / result.dataset_version / "train").to_table().to_pandas()
    table_rows = train[train.source.str.startswith("table:") & (train.modality == "image")]
    assert sorted(table_rows["label"]) == ["a", "b"]  # the table comes first, so its copy of the picture is kept
    assert "ñandú/again.png" not in set(train["input_ref"])
    assert {json.loads(a)["sku"] for a in table_rows["attributes"]} == {1, 2}  # other columns kept
    assert json.loads(train[train.text == "Fresh bread every morning"]["attributes"].iloc[0]) == {"tone": "warm"}
    assert "ñandú/猫 1.png" in set(train["input_ref"]) and set(train.loc[train.input_ref.str.startswith("ñandú"), "label"]) == {"ñandú"}


def test_missing_paths_fail_fast_with_one_message(tmp_path, ray_local):
    from jobs.data.spec import ImageFolderSource, TableSource

    store = Store(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        run_preprocess([ImageFolderSource(kind="image_folder", path=str(tmp_path / "nope"))], PreprocessSpec(), store)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column 'text'"):
        run_preprocess([TableSource(kind="table", path=str(tmp_path / "t.csv"), text_column="text")], PreprocessSpec(), store)


def test_near_duplicates_are_rejects_pointing_at_the_first(tmp_path, ray_local):
    from jobs.data.spec import ImageFolderSource, TextFilesSource

    rng = np.random.default_rng(3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    base = rng.integers(0, 60, (64, 64), dtype=np.uint8)
    base[10:30, 5:60] = 240
    Image.fromarray(base).save(folder / "a.png")
    Image.fromarray(base).resize((60, 60)).save(folder / "b.jpg", quality=80)  # the same picture, re-encoded
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / "c.png")
    (tmp_path / "copy.txt").write_text("Fresh bread, every morning!\nfresh BREAD every morning\nSomething else entirely\n")
    sources = [ImageFolderSource(kind="image_folder", path=str(folder)),
               TextFilesSource(kind="text_files", path=str(tmp_path / "copy.txt"))]
    spec = PreprocessSpec(resolution=16, val_fraction=0.0, min_text_chars=5, near_dedup=True, near_dedup_bits=6)
    result = run_preprocess(sources, spec, Store(str(tmp_path / "root")))
    assert result.counts["by_reason"] == {"duplicate": 2} and result.counts["accepted"] == 4
    rejects = pads.dataset(tmp_path / "root" / "rejects" / "curated" / result.dataset_version).to_table().to_pandas()
    train = pads.dataset(tmp_path / "root" / "curated" / result.dataset_version / "train").to_table().to_pandas()
    by_ref = dict(zip(train["input_ref"], train["id"]))
    details = dict(zip(rejects["input_ref"], rejects["detail"]))
    assert details["b.jpg"].startswith(f"duplicate_of={by_ref['a.png']};near_bits=")
    assert details[f"{tmp_path / 'copy.txt'}:2"] == f"duplicate_of={by_ref[str(tmp_path / 'copy.txt') + ':1']};near_text"


def test_augmented_copies_are_marked_train_only_and_reproducible(tmp_path, ray_local):
    from jobs.data.spec import AugmentSpec

    sources = [BuiltinSource(kind="builtin", name="digits", limit=60)]
    aug = AugmentSpec(copies=2, rotate_degrees=15, crop_scale=0.8, color_jitter=0.2, noise_std=4, hflip=True)
    spec = PreprocessSpec(resolution=16, val_fraction=0.3, augment=aug)
    runs = []
    for name in ("a", "b"):
        r = run_preprocess(sources, spec, Store(str(tmp_path / name)))
        base = tmp_path / name / "curated" / r.dataset_version
        runs.append((r, pads.dataset(base / "train").to_table().to_pandas(), pads.dataset(base / "val").to_table().to_pandas()))
    (r, train, val), (_, train_b, _) = runs
    originals, copies = train[train["augmented_from"].isna()], train[train["augmented_from"].notna()]
    assert r.counts["augmented"] == len(copies) == 2 * len(originals) == 2 * r.counts["train"]
    assert set(copies["augmented_from"]) == set(originals["id"])  # copies of train rows only
    assert set(copies["augmented_from"]).isdisjoint(val["id"]) and val["augmented_from"].isna().all()
    label = dict(zip(originals["id"], originals["label"]))
    assert all(label[src] == lab for src, lab in zip(copies["augmented_from"], copies["label"]))
    assert not set(copies["content_sha256"]) & set(originals["content_sha256"])  # they really changed
    assert dict(zip(train["id"], train["content_sha256"])) == dict(zip(train_b["id"], train_b["content_sha256"]))


def test_verify_curated_catches_files_that_disagree_with_the_manifest(tmp_path, ray_local):
    from jobs.data.curated import verify_curated

    store = Store(str(tmp_path))
    r = run_preprocess([BuiltinSource(kind="builtin", name="text-corpus", limit=150)], PreprocessSpec(), store)
    assert verify_curated(store, r.dataset_version) == {"train": r.counts["train"], "val": r.counts["val"],
                                                        "rejects": r.counts["rejected"]}
    victim = store.files("rejects", "curated", r.dataset_version, suffix=".parquet")[0]
    store.fs.delete_file(victim)
    with pytest.raises(AssertionError, match="files hold"):
        verify_curated(store, r.dataset_version)


def test_mixed_encodings_empty_and_huge_lines(tmp_path, ray_local):
    from jobs.data.spec import TextFilesSource

    path = tmp_path / "mixed.txt"
    path.write_bytes("Déjà vu in UTF-8 here\n".encode("utf-8") + "Crème brûlée in Latin-1\n".encode("latin-1")
                     + b"\n" + b"x" * 3_000_000 + b"\n")
    result = run_preprocess([TextFilesSource(kind="text_files", path=str(path))],
                            PreprocessSpec(min_text_chars=5, max_text_chars=1000), Store(str(tmp_path / "root")))
    c = result.counts
    assert c["inputs"] == 4 and c["accepted"] == 2 and c["by_reason"] == {"empty": 1, "too_long": 1}
    assert c["by_source"][f"text_files:{path}"]["by_encoding"] == {"latin-1": 1, "utf-8": 3}
    base = tmp_path / "root" / "curated" / result.dataset_version
    texts = set(pads.dataset(base / "train").to_table().to_pandas()["text"])
    if c["val"]:
        texts |= set(pads.dataset(base / "val").to_table().to_pandas()["text"])
    assert texts == {"Déjà vu in UTF-8 here", "Crème brûlée in Latin-1"}  # each line decoded right


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_tables_stage_batch_by_batch_in_order(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.data.sources import stage_source
    from jobs.data.spec import TableSource

    n = 12_000
    table = pa.table({"body": [f"line number {i}" for i in range(n)], "n": list(range(n))})
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=3000)
    elif fmt == "csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        table.to_pandas().to_json(path, orient="records", lines=True)
    store = Store(str(tmp_path / "root"))
    source = TableSource(kind="table", path=str(path), text_column="body", limit=11_000)
    assert stage_source(source, 2, store, "stage") == 11_000
    files = store.files("stage", "raw", suffix=".parquet")
    assert len(files) >= 3  # several staged files, Ray Data reads them in parallel
    staged = pq.ParquetDataset(files).read().to_pandas().sort_values("position")
    assert staged["position"].tolist() == [2 * 10**15 + i for i in range(11_000)]
    assert staged["text"].tolist() == [f"line number {i}" for i in range(11_000)]
    assert json.loads(staged["attributes"].iloc[10_999]) == {"n": 10_999}


def test_folder_walks_run_per_top_folder_without_counting_anything_twice(tmp_path, ray_local):
    """Each top-level folder is walked by a Ray task of its own; links between them must not double-count."""
    import pyarrow.parquet as pq

    from jobs.data.folders import GROUP_STRIDE
    from jobs.data.sources import stage_source
    from jobs.data.spec import ImageFolderSource

    root = tmp_path / "shop"
    rng = np.random.default_rng(3)
    for label, n in (("bags", 3), ("hats", 2)):
        (root / label / "sub").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(root / label / "sub" / f"{i}.png")
    (root / "loose.png").write_bytes(png(np.zeros((9, 9), np.uint8)))
    (root / "alias").symlink_to(root / "hats")  # a second name for a whole top folder
    (root / "bags" / "to-hats").symlink_to(root / "hats" / "sub")  # a link into another task's tree
    (root / "hats" / "again").symlink_to(root / "hats")  # a loop inside one tree
    store = Store(str(tmp_path / "out"))
    assert stage_source(ImageFolderSource(kind="image_folder", path=str(root)), 1, store, "stage") == 9
    staged = pq.ParquetDataset(store.files("stage", "raw", suffix=".parquet")).read().to_pandas().sort_values("position")
    reasons = {ref: r.split(":")[0] if isinstance(r, str) else None for ref, r in zip(staged["input_ref"], staged["reject"])}
    assert reasons == {"alias": "symlink_loop", "loose.png": None, "bags/sub/0.png": None, "bags/sub/1.png": None,
                       "bags/sub/2.png": None, "bags/to-hats": "symlink_loop", "hats/again": "symlink_loop",
                       "hats/sub/0.png": None, "hats/sub/1.png": None}
    assert [x if isinstance(x, str) else None for x in staged["label"]] == [None, None, "bags", "bags", "bags", "bags", "hats", "hats", "hats"]
    groups = (staged["position"] - 10**15) // GROUP_STRIDE  # root entries first, then one group per folder
    assert groups.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert staged["input_ref"].tolist()[:2] == ["alias", "loose.png"]


def test_text_files_read_in_tasks_keep_input_order_for_duplicates(tmp_path, ray_local):
    from jobs.data.spec import TextFilesSource
    from jobs.data.text_files import FILES_PER_TASK

    n_files = FILES_PER_TASK + 6  # two Ray tasks
    for i in range(n_files):
        (tmp_path / f"copy-{i:03d}.txt").write_text(f"Unique line number {i} here\nThe same closing line\n")
    source = TextFilesSource(kind="text_files", path=str(tmp_path / "copy-*.txt"))
    result = run_preprocess([source], PreprocessSpec(min_text_chars=5, val_fraction=0.0), Store(str(tmp_path / "root")))
    c = result.counts
    assert c["inputs"] == 2 * n_files and c["accepted"] == n_files + 1 and c["by_reason"] == {"duplicate": n_files - 1}
    rejects = pads.dataset(tmp_path / "root" / "rejects" / "curated" / result.dataset_version).to_table().to_pandas()
    train = pads.dataset(tmp_path / "root" / "curated" / result.dataset_version / "train").to_table().to_pandas()
    kept = train.loc[train["text"] == "The same closing line", "input_ref"].tolist()
    assert kept == [f"{tmp_path}/copy-000.txt:2"]  # the first file's line wins, across tasks
    assert set(rejects["input_ref"]) == {f"{tmp_path}/copy-{i:03d}.txt:2" for i in range(1, n_files)}

    limited = run_preprocess([source.model_copy(update={"limit": 5})], PreprocessSpec(min_text_chars=5),
                             Store(str(tmp_path / "small")))
    assert limited.counts["inputs"] == 5


def test_builtin_faces_and_textures_ship_offline_with_labels(tmp_path, ray_local):
    sources = [BuiltinSource(kind="builtin", name="faces"), BuiltinSource(kind="builtin", name="textures")]
    result = run_preprocess(sources, PreprocessSpec(resolution=32, channels=3, val_fraction=0.0), Store(str(tmp_path)))
    c = result.counts
    assert c["by_source"]["builtin:faces"]["inputs"] == 200 and c["by_source"]["builtin:textures"]["inputs"] == 600
    assert c["by_label"]["face"] > 90 and c["by_label"]["non_face"] > 90
    assert {"brick", "grass", "gravel", "coffee", "chelsea", "immunohistochemistry"} <= set(c["by_label"])
    assert c["balanced"] and c["accepted"] > 700
