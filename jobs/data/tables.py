"""Tables (Parquet, CSV, JSONL; local or URI), streamed batch by batch: source tables and request tables.

A source table's row is one unit: an image when ``image_column`` holds bytes, a path/URI or a ``{bytes, path}``
struct, else a text. Cells of the wrong type and CSV rows that do not parse are rejects, not errors.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.data import entries
from jobs.data.spec import TableSource
from jobs.store.paths import PathPolicy

BATCH_ROWS = 5000  # rows per record batch read from a table


def open_table(path: str, fmt: str = "auto", what: str = "table source") -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    """A Parquet (file or folder), CSV or JSONL table, local or URI, as its schema and a stream of record
    batches, so a table larger than memory is read in constant memory."""
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import pyarrow.json as pajson

    if fmt == "auto":
        suffix = path.lower().rsplit(".", 1)[-1]
        fmt = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}.get(suffix)
        if fmt is None:
            raise ValueError(f"{what} {path}: cannot tell the format from the name; set format")
    if "://" in path:
        fs, local = pafs.FileSystem.from_uri(path)
    else:
        fs, local = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if fs.get_file_info(local).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{what}: {path} not found")
    if fmt == "parquet":
        dataset = pads.dataset(local, filesystem=fs, format="parquet")
        return dataset.schema, dataset.to_batches(batch_size=BATCH_ROWS)

    def reader(f: Any, invalid: list | None = None) -> Any:
        if fmt != "csv":
            return pajson.open_json(f)
        on_invalid = None if invalid is None else (lambda row: invalid.append(row) or "skip")
        return pacsv.open_csv(f, parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid))

    def batches() -> Iterator[pa.RecordBatch | list]:
        """Record batches, and after each the CSV rows that did not parse (ragged, broken quotes) as a list
        of pyarrow's ``InvalidRow``: they become ``malformed_row`` rejects."""
        invalid: list = []
        with fs.open_input_stream(local) as f:
            try:
                stream = reader(f, invalid)
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc) or "Empty JSON file" in str(exc):
                    return  # no rows: no units
                raise
            for batch in stream:
                yield batch
                if invalid:
                    yield list(invalid)
                    invalid.clear()
        if invalid:
            yield list(invalid)

    with fs.open_input_stream(local) as f:
        try:
            schema = reader(f, []).schema
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" not in str(exc) and "Empty JSON file" not in str(exc):
                raise ValueError(f"{what} {path}: {exc}") from None
            schema = pa.schema([])
    return schema, batches()


def table_units(source: TableSource, policy: PathPolicy = PathPolicy()) -> Iterator[pd.DataFrame]:
    schema, batches = open_table(source.path, source.format)
    if not schema.names:  # an empty file: no rows, no units
        return
    yield from _table_chunks(source, schema.names, batches, policy)


def _table_chunks(source: TableSource, columns: list[str], batches: Iterable[pa.RecordBatch],
                  policy: PathPolicy = PathPolicy()) -> Iterator[pd.DataFrame]:
    named = [c for c in (source.image_column, source.text_column, source.label_column) if c]
    missing = [c for c in named if c not in columns]
    others = [c for c in columns if c not in named]
    offset = unparsed = 0
    for batch in batches:
        if isinstance(batch, list):  # CSV rows that did not parse
            yield _malformed_rows(source, batch, unparsed)
            unparsed += len(batch)
            continue
        if batch.num_rows == 0:
            continue
        if missing:  # checked on the first row: a table with no rows has nothing to miss
            raise ValueError(f"table source {source.path}: no column {missing[0]!r} (has {', '.join(map(str, columns))})")
        df = batch.to_pandas()
        out = pd.DataFrame({"input_ref": [f"{source.path}#{offset + i}" for i in range(len(df))]})
        offset += len(df)
        out["attributes"] = [json.dumps({c: _jsonable(r[c]) for c in others}, sort_keys=True, default=str) if others
                             else None for _, r in df.iterrows()]
        out["label"] = df[source.label_column].map(lambda v: None if pd.isna(v) else str(v)) if source.label_column else None
        out["text"] = df[source.text_column] if source.text_column else None
        out["reject"] = None
        if source.text_column:  # a cell of another type (a number, bytes) is a reject, not a cast error later
            wrong = [not (c is None or isinstance(c, str) or (isinstance(c, float) and np.isnan(c))) for c in out["text"]]
            if any(wrong):
                out["reject"] = [f"wrong_type:{source.text_column} holds {type(c).__name__}, not text" if w else None
                                 for c, w in zip(out["text"], wrong)]
                out["text"] = [None if w else c for c, w in zip(out["text"], wrong)]
        if source.image_column:
            out["modality"] = "image"
            cells = df[source.image_column].tolist()
            out["payload"] = [c if isinstance(c, (bytes, bytearray)) else (c or {}).get("bytes") if isinstance(c, dict)
                              else None for c in cells]
            out["path"] = [c if isinstance(c, str) else (c or {}).get("path") if isinstance(c, dict) else None for c in cells]
            out["reject"] = [r or (None if (p is not None or q) else
                                   "empty:no image in the row" if c is None or (isinstance(c, float) and np.isnan(c)) else
                                   f"wrong_type:{source.image_column} holds {type(c).__name__}, not image bytes or a path")
                             for r, p, q, c in zip(out["reject"], out["payload"], out["path"], cells)]
            if policy.restricted:  # a cell naming a file: checked here, before the cleaning task would open it
                out["reject"] = [r if r or p is not None or not q or policy.allows(q) else
                                 f"path_not_allowed:{q} is outside security.allowed_roots"
                                 for r, p, q in zip(out["reject"], out["payload"], out["path"])]
        else:
            out["modality"] = "text"
        yield out


def _malformed_rows(source: TableSource, rows: list, before: int) -> pd.DataFrame:
    """``malformed_row`` rejects for CSV rows pyarrow could not parse (pyarrow's ``InvalidRow``; the streaming
    reader does not know their line numbers, so they are numbered in the order met)."""
    out = pd.DataFrame({
        "input_ref": [f"{source.path}#line{r.number}" if r.number is not None else f"{source.path}#unparsed{before + k}"
                      for k, r in enumerate(rows)],
        "reject": [f"malformed_row:expected {r.expected_columns} columns, got {r.actual_columns}: "
                   f"{entries.shown(r.text[:120])}" for r in rows]})
    out["modality"] = "image" if source.image_column else "text"
    return out


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
