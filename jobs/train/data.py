"""The curated data meets the model: what the training workers iterate (a split of one modality and sources as the
numpy columns ``GenerativeModel.make_batch`` takes, and how Ray Train hands it to them), and what the data decides
about the model's config (image size, channels, classes, a BPE tokenizer) or must fit (a pretrained model)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray.train import DataConfig

import aigc_models
from aigc_models.text import train_bpe
from jobs.data.curated import curated_rows, curated_texts, label_key, rows_filter, split_dataset
from jobs.data.curated import manifest as curated_manifest
from jobs.store import layout
from jobs.store.png import decode_png
from jobs.store.storage import Store
from jobs.train.spec import ModelSpec

COLUMNS = ["source", "modality", "label", "image", "text"]
# A split this small (Parquet bytes) is read and decoded on the driver into Ray's object store: a Ray Data
# job costs seconds of start-up, many times what decoding a few thousand small images takes.
DRIVER_DECODE_MAX_BYTES = 16 * 2**20


def training_columns(batch: pd.DataFrame, modality: str) -> dict[str, np.ndarray]:
    """Curated rows -> the numpy columns ``GenerativeModel.make_batch`` takes."""
    if modality == "image":
        pixels = np.stack([decode_png(img["bytes"]) for img in batch["image"]])  # [B, H, W, C]
        return {"pixels": pixels, "label": batch["label"].fillna("").astype(str).to_numpy()}
    return {"text": batch["text"].astype(str).to_numpy()}


def _streamed(store: Store, version: str, split: str, modality: str, sources: list[str] | None) -> ray.data.Dataset:
    """The split read and decoded by Ray Data (every epoch, unless materialised)."""
    ds = ray.data.read_parquet(store.path(layout.curated(version), split), filesystem=store.fs, columns=COLUMNS)
    wanted = set(sources) if sources else None

    def keep(df: pd.DataFrame) -> pd.DataFrame:
        mask = df["modality"] == modality
        if wanted is not None:
            mask &= df["source"].isin(wanted)
        return df[mask]

    return (ds.map_batches(keep, batch_format="pandas")
              .map_batches(training_columns, fn_kwargs={"modality": modality}, batch_format="pandas"))


def worker_dataset(store: Store, version: str, split: str, spec: ModelSpec, cache: bool) -> ray.data.Dataset:
    """What the workers iterate: decoded once (``cache``: on the driver for a small split, else materialised by
    Ray Data before the workers take their CPUs), or streamed from Parquet every epoch. All three hand the
    workers the same rows in the file order."""
    if not cache:
        return _streamed(store, version, split, spec.modality, spec.sources)
    if not small_split(store, version, split):
        return _streamed(store, version, split, spec.modality, spec.sources).materialize()
    rows = split_dataset(store, version, split).to_table(
        columns=COLUMNS, filter=rows_filter(spec.modality, spec.sources)).to_pandas()
    columns = training_columns(rows, spec.modality)
    n = len(next(iter(columns.values())))
    return ray.data.from_items([{k: v[i] for k, v in columns.items()} for i in range(n)],
                               override_num_blocks=max(1, min(64, n // 256)))


def small_split(store: Store, version: str, split: str) -> bool:
    """A split small enough to decode on the driver, and for a training worker to keep its decoded batches in
    memory after the first epoch (``LoopConfig.keep_batches``)."""
    dataset = split_dataset(store, version, split)
    return sum(f.size for f in store.fs.get_file_info(dataset.files)) <= DRIVER_DECODE_MAX_BYTES


def data_config(deterministic: bool) -> DataConfig:
    """How the splits reach the workers. Deterministic: Ray Data keeps block order and the splitter deals blocks
    by row count alone (no locality, no timing), so rank r gets the same rows in the same order on every run and
    after every restart."""
    options = DataConfig.default_ingest_options()
    if deterministic:
        options.preserve_order = True
    return DataConfig(execution_options=options, enable_shard_locality=not deterministic)


def split_stats(store: Store, version: str, split: str, modality: str, sources: list[str] | None) -> tuple[int, list[str]]:
    """Rows and distinct labels of what a model will train on, from one small column read on the driver."""
    table = curated_rows(store, version, split, modality, sources, ["label"], max_rows=None)
    if table is None:
        return 0, []
    labels = {str(l) for l in table.column("label").to_pylist() if l is not None}
    return table.num_rows, sorted(labels, key=label_key)


# ---- what the data decides about the model, checked on the driver --------------------------------------------

def model_config(spec: ModelSpec, store: Store, dataset_version: str, classes: list[str]) -> dict[str, Any]:
    """Hyperparameters from the spec plus the fields the data decides, for configs that have them. A
    pretrained family gets none: its weights fix the image shape and what each class index means (its
    ``classes`` names them), so the data is checked against the model instead (``check_data_fits_model``)."""
    cls = aigc_models.FAMILIES[spec.family].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    manifest = curated_manifest(store, dataset_version)
    derived = {} if aigc_models.FAMILIES[spec.family].pretrained else {
        "resolution": manifest["preprocess"]["resolution"], "channels": manifest["preprocess"]["channels"],
        "classes": classes}
    config = {**{k: v for k, v in derived.items() if k in fields}, **spec.hyperparameters}
    if config.get("tokenizer") == "bpe" and not config.get("tokenizer_json"):
        vocab = config.get("vocab_size", cls.vocab_size)  # type: ignore[attr-defined]
        config["tokenizer_json"] = train_bpe(curated_texts(store, dataset_version, "train", spec.sources), vocab)
    return config


def check_data_fits_model(spec: ModelSpec, model: aigc_models.GenerativeModel, store: Store, dataset_version: str,
                          classes: list[str]) -> None:
    """Hyperparameters a model entry pins (resolution, channels, classes), and what a pretrained model's
    weights fix (its ``output_shape`` and classes), must agree with the curated data; a mismatch is an error
    here, on the driver, naming the key to change, instead of a shape error inside every worker."""
    manifest = curated_manifest(store, dataset_version)["preprocess"]
    pinned = spec.hyperparameters
    for key in ("resolution", "channels"):
        if key in pinned and key in manifest and int(pinned[key]) != int(manifest[key]):
            raise ValueError(f"model {spec.name}: {key} {pinned[key]} does not match the curated data's {manifest[key]} "
                             f"(dataset {dataset_version}); set preprocess.{key} or drop the model's '{key}'")
    named = [str(x) for x in getattr(model.config, "classes", None) or pinned.get("classes") or []]  # pinned or weights'
    outside = [l for l in classes if l not in named]
    if named and outside:
        raise ValueError(f"model {spec.name}: the curated data has labels outside the model's classes: "
                         f"{', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''} (dataset {dataset_version}; "
                         f"the model's classes are {', '.join(named[:10])}{' ...' if len(named) > 10 else ''}: name its "
                         "class indices with the model's 'classes', or pick sources with the model's 'sources')")
    if model.modality != "image":
        return
    r, ch = manifest.get("resolution"), manifest.get("channels")
    h, w, c = model.output_shape
    if (r, r) != (h, w) or ch != c:
        key, want = ("resolution", h) if (r, r) != (h, w) else ("channels", c)
        raise ValueError(f"preprocess.{key}: the curated data (dataset {dataset_version}) has {r}x{r} images with {ch} "
                         f"channel(s), model {spec.name} ({spec.family}) takes {h}x{w} with {c}; set preprocess.{key}: "
                         f"{want} and preprocess again")
