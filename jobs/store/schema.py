"""The Parquet schemas: curated rows, rejects, generated rows. One module, so every stage agrees.

The ``image`` struct ``{bytes, path}`` is the layout Hugging Face ``datasets`` reads as an Image feature.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

SCHEMA_VERSION = "2"  # curated rows (and what a curated version's hash covers); 2: quality scores of the filters
GENERATED_SCHEMA_VERSION = "3"  # generated rows; 3: quality.distinct_2 counts word bigrams, as the gate's distinct_2
#   does (it counted byte bigrams before): a night's fingerprint covers it, so such nights are generated anew

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PICTURE = [("image", IMAGE), ("width", pa.int32()), ("height", pa.int32()), ("mode", pa.string())]  # null for texts

CURATED = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("input_ref", pa.string()),
    ("modality", pa.string()),
    ("label", pa.string()),
    *PICTURE,
    ("text", pa.string()),
    ("content_sha256", pa.string()),
    ("split", pa.string()),
    ("attributes", pa.string()),  # JSON of a table source's other columns, else null
    ("augmented_from", pa.string()),  # id of the row this augmented copy was made from, else null
])

REJECTS = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("input_ref", pa.string()),
    ("modality", pa.string()),
    ("stage", pa.string()),  # where it was refused: ingest (reading the source), clean, or dedup
    ("reason", pa.string()),  # stable code: undecodable, empty, too_short, too_long, duplicate, ...
    ("detail", pa.string()),
])

QUALITY = pa.struct([
    ("contrast", pa.float64()),  # images: pixel std / 127.5, 0 for a flat image
    ("ink", pa.float64()),  # images: share of pixels far from the background
    ("distinct_2", pa.float64()),  # texts: distinct word bigrams / word bigrams (the gate's distinct_2, of one text)
    ("length", pa.int32()),  # texts: generated characters (without the prompt)
    ("repetition", pa.float64()),  # texts: share of word 3-grams that repeat an earlier one
    ("training_overlap", pa.float64()),  # texts: share of 24-char shingles found in the training texts
    ("label_confidence", pa.float64()),  # conditional images: the domain classifier's P(requested label)
    ("predicted_label", pa.string()),  # conditional images: the classifier's most likely label
    ("nearest_train_distance", pa.float64()),  # images: RMS pixel distance (0..1) to the nearest training image
    ("nearest_train_id", pa.string()),  # images: that training image's curated id
])

GENERATED = pa.schema([
    ("id", pa.string()),
    ("run_id", pa.string()),
    ("run_date", pa.date32()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("modality", pa.string()),
    *PICTURE,
    ("text", pa.string()),
    ("label", pa.string()),
    ("prompt", pa.string()),
    ("request_id", pa.string()),
    ("model_name", pa.string()),
    ("model_family", pa.string()),
    ("model_version", pa.string()),
    ("checkpoint_sha256", pa.string()),
    ("dataset_version", pa.string()),
    ("seed", pa.int64()),
    ("sampler", pa.string()),
    ("content_sha256", pa.string()),  # of the pixels (H*W*C bytes) or the UTF-8 text: equal content, equal hash
    ("quality", QUALITY),
    ("provenance", pa.string()),
])


def hf_features(arrow_schema: pa.Schema, images: tuple[str, ...] = ("image",)) -> dict:
    """Hugging Face ``datasets`` feature spec of ``arrow_schema`` (what ``Features.to_dict()`` gives), with the
    ``images`` columns as ``Image`` features, so ``load_dataset("parquet", ...)`` decodes them as pictures.
    Written by hand because ``datasets`` is not a dependency; a test checks it against ``datasets`` itself."""
    def feature(t: pa.DataType) -> dict:
        if pa.types.is_struct(t):
            return {t.field(i).name: feature(t.field(i).type) for i in range(t.num_fields)}
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return {"feature": feature(t.value_type), "_type": "List"}
        dtype = "date32" if pa.types.is_date32(t) else str(t)
        dtype = {"double": "float64", "float": "float32", "halffloat": "float16"}.get(dtype, dtype)
        return {"dtype": dtype, "_type": "Value"}

    return {f.name: {"_type": "Image"} if f.name in images else feature(f.type) for f in arrow_schema}


def with_hf_features(arrow_schema: pa.Schema) -> pa.Schema:
    meta = {**(arrow_schema.metadata or {}),
            b"huggingface": json.dumps({"info": {"features": hf_features(arrow_schema)}}).encode()}
    return arrow_schema.with_metadata(meta)


GENERATED = with_hf_features(GENERATED)  # datasets.load_dataset("parquet", ...) reads `image` as an Image
CURATED_FILES = with_hf_features(CURATED)  # the curated files carry it too

# generated rows that did not make it: the same columns (image/text null where sampling failed) plus why
GENERATED_REJECTED = with_hf_features(pa.schema(list(GENERATED.remove_metadata()) + [
    ("stage", pa.string()),  # generate (sampling raised) or filter
    ("reason", pa.string()),  # generation_error, low_label_confidence, near_copy, blank_image, too_short, ...
    ("detail", pa.string()),
]))


def scalar(value):
    """``None`` for pandas' missing markers (``NA``, ``NaN``, ``NaT``), the value otherwise."""
    if value is None or isinstance(value, (str, bytes, dict, list)):
        return value
    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def table(rows: dict[str, list], schema: pa.Schema) -> pa.Table:
    """A table with exactly ``schema``'s columns, in order; missing columns are all-null."""
    n = len(next(iter(rows.values()))) if rows else 0
    return pa.table({f.name: pa.array(rows.get(f.name, [None] * n), type=f.type) for f in schema}, schema=schema)


def augmented(modality: str) -> pa.Schema:
    """Rows of an augmented dataset (``aigc augment``): curated real rows and published synthetic rows of one
    modality, told apart by ``is_synthetic``. Images keep the ``{bytes, path}`` struct and carry the Hugging Face
    feature metadata, so ``datasets`` decodes them."""
    content = PICTURE if modality == "image" else [("text", pa.string())]
    return with_hf_features(pa.schema([
        ("id", pa.string()),
        ("is_synthetic", pa.bool_()),
        ("label", pa.string()),
        *content,
        ("source", pa.string()),  # curated:<dataset_version> or generated:<run_date>
        ("model_name", pa.string()),  # model_name, model_version, seed: null for real rows
        ("model_version", pa.string()),
        ("seed", pa.int64()),
        ("dataset_version", pa.string()),  # real rows: their curated version; synthetic: the one their model trained on
    ]))
