"""Readers of the configured sources, each yielding raw input units as a DataFrame.

Raw columns: ``source``, ``input_ref`` (where the unit came from, for people), ``modality``, ``label``,
``payload`` (encoded image bytes, or None), ``text`` (or None), ``path`` (an image to read later),
``reject`` (``reason:detail`` when the reader already knows the unit is bad), ``encoding`` (texts: the
decoding used) and ``attributes`` (JSON of a table's other columns). One row per input unit: every unit is
later accepted or rejected, never dropped, so the accounting in the manifest adds up.

Images are read lazily: a unit carries its ``path`` and the cleaning task (on Ray) reads the bytes, so
the driver only lists files. Every file met is a unit: one that is not an image becomes a reject.

Built-ins use data that ships inside dependencies, never a download:
- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), label = the digit.
- ``text-corpus``: the English prose of CPython's ``pydoc_data.topics`` (the language reference help
  texts), one document per paragraph.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from .specs import ImageFolderSource, Source, TableSource, TextFilesSource
from .storage import Store

RAW_COLUMNS = ["source", "input_ref", "modality", "label", "payload", "text", "path", "reject", "encoding",
               "attributes"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def read_source(source: Source) -> Iterator[pd.DataFrame]:
    """Raw units of ``source`` in chunks (tables stream batch by batch; the others come as one chunk)."""
    if isinstance(source, ImageFolderSource):
        chunks: Iterable[pd.DataFrame] = [_image_folder(source)]
    elif isinstance(source, TextFilesSource):
        chunks = [_text_files(source)]
    elif isinstance(source, TableSource):
        chunks = _table(source)
    else:
        chunks = [{"digits": _digits, "text-corpus": _text_corpus}[source.name]()]
    left = source.limit
    for df in chunks:
        if left is not None:
            df, left = df.iloc[:left], left - min(left, len(df))
        for col in RAW_COLUMNS:
            if col not in df:
                df[col] = None
        df["source"] = source.source_id
        yield df[RAW_COLUMNS].reset_index(drop=True)
        if left == 0:
            return


RAW_SCHEMA = pa.schema([("source", pa.string()), ("input_ref", pa.string()), ("modality", pa.string()),
                        ("label", pa.string()), ("payload", pa.binary()), ("text", pa.string()), ("path", pa.string()),
                        ("reject", pa.string()), ("encoding", pa.string()), ("attributes", pa.string()),
                        ("position", pa.int64())])
STAGE_CHUNK = 5000  # raw units per staged file: Ray Data reads the files in parallel


def stage_source(source: Source, index: int, store: Store, staging: str) -> int:
    """Reads one source into raw-unit Parquet files under ``staging/raw/`` and returns how many units it
    had. ``position`` keeps the input order across sources (source index, then row) for "first one wins"."""
    total, part = 0, 0
    for df in read_source(source):
        df["position"] = index * 10**12 + total + np.arange(len(df), dtype=np.int64)
        total += len(df)
        for start in range(0, len(df), STAGE_CHUNK):
            piece = df.iloc[start:start + STAGE_CHUNK]
            table = pa.Table.from_pandas(piece.astype(object).where(piece.notna(), None), schema=RAW_SCHEMA,
                                         preserve_index=False)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            store.write_bytes(sink.getvalue().to_pybytes(), staging, "raw", f"source-{index:04d}-{part:06d}.parquet")
            part += 1
    return total


def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    payload = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        payload.append(buf.getvalue())
    return pd.DataFrame({
        "input_ref": [f"sklearn.datasets.load_digits[{i}]" for i in range(len(pixels))],
        "modality": "image",
        "label": [str(int(t)) for t in digits.target],
        "payload": payload,
        "text": None,
    })


def _text_corpus() -> pd.DataFrame:
    from pydoc_data.topics import topics

    refs, texts = [], []
    for topic in sorted(topics):
        for i, para in enumerate(re.split(r"\n\s*\n", topics[topic])):
            refs.append(f"pydoc_data.topics[{topic}]#{i}")
            texts.append(para)
    return pd.DataFrame({"input_ref": refs, "modality": "text", "label": None, "payload": None, "text": texts})


def _image_folder(source: ImageFolderSource) -> pd.DataFrame:
    """Every entry met is a unit. Hidden entries are ``hidden`` rejects (a hidden folder counts once);
    symlinked folders are followed once (a second visit is a ``symlink_loop`` reject); links leading out
    of the folder are ``symlink_outside`` rejects unless ``follow_symlinks_outside``."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder source: {root} is not a directory")
    root_real = root.resolve()
    visited, stack, rows = {root_real}, [root], []

    def unit(path: Path, reject: str | None = None, payload: bytes | None = None) -> None:
        rows.append({"input_ref": str(path.relative_to(root)), "path": str(path), "payload": payload, "reject": reject})

    while stack:
        folder = stack.pop()
        for entry in sorted(os.scandir(folder), key=lambda e: e.name, reverse=True):
            path = Path(entry.path)
            if entry.name.startswith("."):
                unit(path, "hidden:hidden file or folder, skipped")
                continue
            real = path.resolve()
            if entry.is_symlink() and not real.is_relative_to(root_real) and not source.follow_symlinks_outside:
                unit(path, f"symlink_outside:link leads outside the folder to {real}")
                continue
            if entry.is_dir(follow_symlinks=True):
                if real in visited:
                    unit(path, f"symlink_loop:{real} was already visited")
                    continue
                visited.add(real)
                stack.append(path)
            elif not real.exists():
                unit(path, "unreadable:broken symlink")
            else:
                unit(path, None if path.suffix.lower() in IMAGE_SUFFIXES else
                     f"unsupported_type:not an image file type: {entry.name}")
    rows.sort(key=lambda r: r["input_ref"])
    nested = any(len(Path(r["input_ref"]).parts) > 1 for r in rows if not r["reject"])
    by_folder = source.labels == "folders" or (source.labels == "auto" and nested)
    for r in rows:
        parts = Path(r["input_ref"]).parts
        r.update(modality="image", label=parts[0] if by_folder and len(parts) > 1 else None)
    return pd.DataFrame(rows, columns=["input_ref", "modality", "label", "payload", "path", "reject"])


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes -> (text, encoding used). BOMs decide first (UTF-8, UTF-16 LE/BE); then UTF-16 LE without BOM
    when (nearly) every other byte is NUL; then UTF-8; else Latin-1, which decodes any byte sequence."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    if len(data) >= 4 and data[1::2].count(0) > 0.9 * (len(data) // 2):
        return data.decode("utf-16-le", errors="replace"), "utf-16-le"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _text_files(source: TextFilesSource) -> pd.DataFrame:
    paths = sorted(p for p in glob.glob(os.path.expanduser(source.path), recursive=True) if os.path.isfile(p))
    if not paths:
        raise FileNotFoundError(f"text_files source: no file matches {source.path}")
    rows = []
    for p in paths:
        try:
            text, encoding = decode_text(Path(p).read_bytes())
        except OSError as exc:
            rows.append({"input_ref": p, "text": None, "encoding": None, "reject": f"unreadable:{exc}"})
            continue
        if source.per == "file":
            units = [(text, encoding)]
        elif encoding == "latin-1":  # not UTF-8 as a whole: decide line by line (files that mix encodings)
            units = [decode_text(line) for line in Path(p).read_bytes().splitlines()]
        else:
            units = [(line, encoding) for line in text.splitlines()]
        for i, (unit_text, unit_encoding) in enumerate(units or [("", encoding)]):
            rows.append({"input_ref": p if source.per == "file" else f"{p}:{i + 1}", "text": unit_text,
                         "encoding": unit_encoding, "reject": None})
    df = pd.DataFrame(rows, columns=["input_ref", "text", "encoding", "reject"])
    df["modality"] = "text"
    return df


def _table(source: TableSource) -> Iterator[pd.DataFrame]:
    """Streams the table in record batches, so a table larger than memory stages in constant memory."""
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import pyarrow.json as pajson

    fmt = source.format
    if fmt == "auto":
        suffix = source.path.lower().rsplit(".", 1)[-1]
        fmt = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}.get(suffix)
        if fmt is None:
            raise ValueError(f"table source {source.path}: cannot tell the format from the name; set format")
    if "://" in source.path:
        fs, path = pafs.FileSystem.from_uri(source.path)
    else:
        fs, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(source.path))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"table source: {source.path} not found")
    if fmt == "parquet":
        dataset = pads.dataset(path, filesystem=fs, format="parquet")
        columns, batches = dataset.schema.names, dataset.to_batches(batch_size=STAGE_CHUNK)
        yield from _table_chunks(source, columns, batches)
        return
    with fs.open_input_stream(path) as f:
        reader = pacsv.open_csv(f) if fmt == "csv" else pajson.open_json(f)
        yield from _table_chunks(source, reader.schema.names, reader)


def _table_chunks(source: TableSource, columns: list[str], batches: Iterable[pa.RecordBatch]) -> Iterator[pd.DataFrame]:
    named = [c for c in (source.image_column, source.text_column, source.label_column) if c]
    missing = [c for c in named if c not in columns]
    if missing:
        raise ValueError(f"table source {source.path}: no column {missing[0]!r} (has {', '.join(map(str, columns))})")
    others = [c for c in columns if c not in named]
    offset = 0
    for batch in batches:
        df = batch.to_pandas()
        out = pd.DataFrame({"input_ref": [f"{source.path}#{offset + i}" for i in range(len(df))]})
        offset += len(df)
        out["attributes"] = [json.dumps({c: _jsonable(r[c]) for c in others}, sort_keys=True, default=str) if others
                             else None for _, r in df.iterrows()]
        out["label"] = df[source.label_column].map(lambda v: None if pd.isna(v) else str(v)) if source.label_column else None
        out["text"] = df[source.text_column] if source.text_column else None
        if source.image_column:
            out["modality"] = "image"
            cells = df[source.image_column].tolist()
            out["payload"] = [c if isinstance(c, (bytes, bytearray)) else (c or {}).get("bytes") if isinstance(c, dict)
                              else None for c in cells]
            out["path"] = [c if isinstance(c, str) else (c or {}).get("path") if isinstance(c, dict) else None for c in cells]
            out["reject"] = [None if (p is not None or q) else "empty:no image in the row"
                             for p, q in zip(out["payload"], out["path"])]
        else:
            out["modality"] = "text"
        yield out


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
