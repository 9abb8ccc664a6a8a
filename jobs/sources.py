"""Readers of the configured sources, each yielding raw input units as a DataFrame.

Raw columns: ``source``, ``input_ref`` (where the unit came from, for people), ``modality``, ``label``,
``payload`` (encoded image bytes, or None), ``text`` (or None), ``path`` (an image to read later),
``reject`` (``reason:detail`` when the reader already knows the unit is bad), ``encoding`` (texts: the
decoding used) and ``attributes`` (JSON of a table's other columns). One row per input unit: every unit is
later accepted or rejected, never dropped, so the accounting in the manifest adds up.

Images are read lazily: a unit carries its ``path`` and the cleaning task (on Ray) reads the bytes. Folder
trees are walked and text files read in Ray tasks too (``stage_source``), so the driver lists only the
top level. Every entry met is a unit: one that is not an image, or is not a regular file, or loops, becomes a
reject (``jobs.entries``); nothing is followed out of the folder or opened unless it is a regular file.

Built-ins use data that ships inside dependencies, never a download:
- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), label = the digit.
- ``faces``: scikit-image's 200 LFW 25x25 grayscale crops, labels ``face`` (100) and ``non_face`` (100).
- ``textures``: 600 seeded random 64x64 crops of six scikit-image sample photographs (brick, grass, gravel
  in grayscale; coffee, chelsea, immunohistochemistry in colour), label = the photograph's name.
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
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from PIL import Image

from . import entries
from .specs import BuiltinSource, ImageFolderSource, Source, TableSource, TextFilesSource
from .paths import PathPolicy, glob_root
from .storage import Store

RAW_COLUMNS = ["source", "input_ref", "modality", "label", "payload", "text", "path", "reject", "encoding",
               "attributes"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def read_source(source: TableSource | BuiltinSource, policy: PathPolicy = PathPolicy()) -> Iterator[pd.DataFrame]:
    """Raw units of a table (streamed batch by batch) or a built-in dataset, in chunks."""
    chunks = _table(source, policy) if isinstance(source, TableSource) else [BUILTINS[source.name]()]
    for df in chunks:
        yield _raw_frame(df, source.source_id)


def _raw_frame(df: pd.DataFrame, source_id: str) -> pd.DataFrame:
    for col in RAW_COLUMNS:
        if col not in df:
            df[col] = None
    df["source"] = source_id
    return df[RAW_COLUMNS + (["position"] if "position" in df else [])].reset_index(drop=True)


RAW_SCHEMA = pa.schema([("source", pa.string()), ("input_ref", pa.string()), ("modality", pa.string()),
                        ("label", pa.string()), ("payload", pa.binary()), ("text", pa.string()), ("path", pa.string()),
                        ("reject", pa.string()), ("encoding", pa.string()), ("attributes", pa.string()),
                        ("position", pa.int64())])
STAGE_CHUNK = 5000  # raw units per staged file: Ray Data reads the files in parallel
SOURCE_STRIDE = 10**15  # position = source index * SOURCE_STRIDE + place in the source
GROUP_STRIDE = 10**9  # image folders: top-level folder g starts at g * GROUP_STRIDE
FILE_STRIDE = 10**7  # text files: file i starts at i * FILE_STRIDE (then line number)
FILES_PER_TASK = 64  # text files read by one Ray task


def stage_source(source: Source, index: int, store: Store, staging: str, policy: PathPolicy = PathPolicy()) -> int:
    """Reads one source into raw-unit Parquet files under ``staging/raw/`` and returns how many units it
    had. ``position`` keeps the input order across sources (source index, then place) for "first one wins".

    Folders and text files are listed here (names only) and read in Ray tasks: one task per top-level
    folder of an image folder, one per ``FILES_PER_TASK`` text files; tables and built-ins stream from
    here batch by batch. Memory on this process stays flat either way. With ``limit`` set, everything
    runs here in input order and stops early (``limit`` is for trying a config on a sample).

    With a restricted ``policy`` (``security.allowed_roots``), files whose real path lies outside the roots
    (links, ``..`` in a table cell, another bucket) become ``path_not_allowed`` rejects and are never opened.
    """
    if isinstance(source, ImageFolderSource):
        groups, by_folder = _image_folder_groups(source)
        work = [(_walk_group, (source, g, starts, by_folder, policy)) for g, starts in enumerate(groups)]
    elif isinstance(source, TextFilesSource):
        paths = text_units(source)
        work = [(_read_text_group, (source, first, paths[first:first + FILES_PER_TASK], policy))
                for first in range(0, len(paths), FILES_PER_TASK)]
    else:
        total, left = 0, source.limit
        for part, df in enumerate(read_source(source, policy)):
            if left is not None:
                df, left = df.iloc[:left], left - min(left, len(df))
            total += _write_units(df.assign(position=index * SOURCE_STRIDE + total + np.arange(len(df))),
                                  store, staging, f"source-{index:04d}-{part:06d}")
            if left == 0:
                break
        return total
    if source.limit is not None:
        total = 0
        for g, (fn, args) in enumerate(work):
            df = fn(*args)
            df = df.iloc[:source.limit - total]
            total += _write_units(df.assign(position=df["position"] + index * SOURCE_STRIDE), store, staging,
                                  f"source-{index:04d}-{g:06d}")
            if total >= source.limit:
                break
        return total
    stage = ray.remote(num_cpus=1, max_retries=2)(_stage_group)
    refs = [stage.remote(fn, args, index, store, staging, f"source-{index:04d}-{g:06d}") for g, (fn, args) in enumerate(work)]
    return sum(_gather(refs, f"reading {source.source_id}"))


def _stage_group(fn: Callable[..., pd.DataFrame], args: tuple, index: int, store: Store, staging: str, name: str) -> int:
    df = fn(*args)
    return _write_units(df.assign(position=df["position"] + index * SOURCE_STRIDE), store, staging, name)


def _gather(refs: list, what: str) -> list:
    """Results of Ray tasks, with a progress bar when there are many."""
    from tqdm.auto import tqdm

    done: dict = {}
    pending = list(refs)
    with tqdm(total=len(refs), desc=what, unit="task", disable=len(refs) < 16) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=min(len(pending), 8), timeout=5.0)
            for ref, value in zip(ready, ray.get(ready)):
                done[ref] = value
            bar.update(len(ready))
    return [done[r] for r in refs]


def _write_units(df: pd.DataFrame, store: Store, staging: str, name: str) -> int:
    """Raw units to ``staging/raw/<name>-<part>.parquet``, ``STAGE_CHUNK`` rows per file."""
    for part, start in enumerate(range(0, len(df), STAGE_CHUNK)):
        piece = df.iloc[start:start + STAGE_CHUNK]
        table = pa.Table.from_pandas(piece.astype(object).where(piece.notna(), None), schema=RAW_SCHEMA,
                                     preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        store.write_bytes(sink.getvalue().to_pybytes(), staging, "raw", f"{name}-{part:06d}.parquet")
    return len(df)


def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    return _png_units(pixels, [f"sklearn.datasets.load_digits[{i}]" for i in range(len(pixels))],
                      [str(int(t)) for t in digits.target])


def _png_units(images: Iterable[np.ndarray], refs: list[str], labels: list[str]) -> pd.DataFrame:
    payload = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        payload.append(buf.getvalue())
    return pd.DataFrame({"input_ref": refs, "modality": "image", "label": labels, "payload": payload, "text": None})


def _faces() -> pd.DataFrame:
    """scikit-image's LFW subset: 100 faces then 100 non-faces, 25x25 grayscale."""
    from skimage.data import lfw_subset

    images = np.clip(np.round(lfw_subset() * 255.0), 0, 255).astype(np.uint8)  # [200, 25, 25] in [0, 1] -> uint8
    labels = ["face" if i < 100 else "non_face" for i in range(len(images))]
    return _png_units(images, [f"skimage.data.lfw_subset[{i}]" for i in range(len(images))], labels)


TEXTURE_PHOTOS = ("brick", "grass", "gravel", "coffee", "chelsea", "immunohistochemistry")
TEXTURE_CROPS, TEXTURE_SIZE = 100, 64


def _textures() -> pd.DataFrame:
    """Seeded random 64x64 crops, 100 from each of six scikit-image sample photographs (label = photo)."""
    import skimage.data

    rng = np.random.default_rng(0)
    images, refs, labels = [], [], []
    for name in TEXTURE_PHOTOS:
        photo = getattr(skimage.data, name)()
        for k in range(TEXTURE_CROPS):
            y, x = (int(rng.integers(0, photo.shape[d] - TEXTURE_SIZE + 1)) for d in (0, 1))
            images.append(np.ascontiguousarray(photo[y:y + TEXTURE_SIZE, x:x + TEXTURE_SIZE]))
            refs.append(f"skimage.data.{name}[{y}:{y + TEXTURE_SIZE},{x}:{x + TEXTURE_SIZE}]#{k}")
            labels.append(name)
    return _png_units(images, refs, labels)


def _text_corpus() -> pd.DataFrame:
    from pydoc_data.topics import topics

    refs, texts = [], []
    for topic in sorted(topics):
        for i, para in enumerate(re.split(r"\n\s*\n", topics[topic])):
            refs.append(f"pydoc_data.topics[{topic}]#{i}")
            texts.append(para)
    return pd.DataFrame({"input_ref": refs, "modality": "text", "label": None, "payload": None, "text": texts})


BUILTINS = {"digits": _digits, "faces": _faces, "textures": _textures, "text-corpus": _text_corpus}


def _image_folder_groups(source: ImageFolderSource) -> tuple[list[tuple[list[str], list[str]]], bool]:
    """Splits the folder into walks: ``(root entry names, real paths walked by the other walks)`` each.
    Walk 0 takes the loose entries of the root; every top-level folder is a walk of its own, so Ray tasks
    list big trees in parallel. With ``follow_symlinks_outside`` one walk does the whole tree, so a folder
    reached by two links is still walked once."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder source: {root} is not a directory")
    root_real = Path(entries.real(str(root)))
    names = sorted(e.name for e in os.scandir(root))
    tops: dict[str, Path] = {}
    for name in sorted(names, key=lambda n: (os.path.islink(root / n), n)):  # real folders before links to them
        path = root / name
        if name.startswith(".") or entries.bad_name(name) or entries.kind(str(path))[0] != "dir":
            continue  # the walk of the loose entries makes these units (rejects)
        real = Path(entries.real(str(path)))
        if (real == root_real or not real.is_relative_to(root_real)
                or any(real.is_relative_to(t) or t.is_relative_to(real) for t in tops.values())):
            continue
        tops[name] = real
    by_folder = source.labels == "folders" or (source.labels == "auto" and bool(tops))
    if source.follow_symlinks_outside:
        return [(names, [])], by_folder
    loose = [n for n in names if n not in tops]
    walks = [(loose, [str(t) for t in tops.values()])]
    walks += [([name], [str(t) for n, t in tops.items() if n != name]) for name in sorted(tops)]
    return walks, by_folder


def _walk_group(source: ImageFolderSource, group: int, walk: tuple[list[str], list[str]], by_folder: bool,
                policy: PathPolicy = PathPolicy()) -> pd.DataFrame:
    """Every entry met is a unit. Hidden entries are ``hidden`` rejects (a hidden folder counts once);
    symlinked folders are followed once (a second visit, or a link into a folder another walk lists, is a
    ``symlink_loop`` reject, as is a link that leads back to itself); links leading out of the folder are
    ``symlink_outside`` rejects unless ``follow_symlinks_outside``; FIFOs, sockets, devices, dangling links
    and odd names are rejects too (``jobs.entries``). Runs in a Ray task."""
    names, others = walk
    root = Path(source.path).expanduser()
    root_real = Path(entries.real(str(root)))
    elsewhere = [Path(o) for o in others]
    visited, rows = {root_real}, []

    def unit(path: Path, reject: str | None = None, readable: bool = True) -> None:
        rows.append({"input_ref": entries.shown(str(path.relative_to(root))), "path": str(path) if readable else None,
                     "reject": reject})

    stack = [(root, sorted(names, reverse=True))]
    while stack:
        folder, listing = stack.pop()
        for name in listing:
            path = folder / name
            odd = entries.bad_name(name)
            if odd:
                unit(path, odd, readable=False)
                continue
            if name.startswith("."):
                unit(path, "hidden:hidden file or folder, skipped")
                continue
            real = Path(entries.real(str(path)))
            if path.is_symlink() and not real.is_relative_to(root_real) and not source.follow_symlinks_outside:
                unit(path, f"symlink_outside:link leads outside the folder to {entries.shown(str(real))}")
                continue
            if policy.restricted and not policy.allows(str(real)):  # not even listed, let alone read
                unit(path, f"path_not_allowed:{real} is outside security.allowed_roots")
                continue
            what, why = entries.kind(str(path))
            if what == "reject":
                unit(path, why)
            elif what == "dir":
                if real in visited or any(real.is_relative_to(o) or o.is_relative_to(real) for o in elsewhere):
                    unit(path, f"symlink_loop:{entries.shown(str(real))} was already visited")
                    continue
                try:
                    inside = sorted((e.name for e in os.scandir(path)), reverse=True)
                except OSError as exc:
                    unit(path, f"unreadable:cannot list the folder: {exc.strerror}")
                    continue
                visited.add(real)
                stack.append((path, inside))
            else:
                unit(path, None if path.suffix.lower() in IMAGE_SUFFIXES else
                     f"unsupported_type:not an image file type: {name}")
    rows.sort(key=lambda r: r["input_ref"])
    df = pd.DataFrame(rows, columns=["input_ref", "path", "reject"])
    parts = [Path(r).parts for r in df["input_ref"]]
    df["label"] = [p[0] if by_folder and len(p) > 1 else None for p in parts]
    df["modality"] = "image"
    df["position"] = group * GROUP_STRIDE + np.arange(len(df), dtype=np.int64)
    return _raw_frame(df, source.source_id)


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


MAX_TEXT_FILE_BYTES = 1 << 30  # a text file larger than this is a ``too_large`` reject, never read whole


def text_units(source: TextFilesSource) -> list[tuple[str, str | None]]:
    """Every non-folder the glob matches, with its reject (``reason:detail``) when it is known from the
    listing: odd names, FIFOs and sockets, loops, dangling links, links out of the glob's fixed folders, and
    the same file reached a second time through a link."""
    pattern = os.path.expanduser(source.path)
    if glob.has_magic(pattern):
        root = glob_root(pattern)
        listed = entries.walk_glob(pattern, root) if os.path.isdir(root) else []
        tree = entries.real(root)
    else:
        listed = [] if os.path.isdir(pattern) or not os.path.lexists(pattern) else [(pattern, entries.kind(pattern)[1])]
        tree = None
    units, seen = [], {}
    for p, why in listed:
        real = entries.real(p)
        if why is None and tree and not (real == tree or real.startswith(tree.rstrip("/") + "/")):
            why = f"symlink_outside:link leads outside {entries.shown(glob_root(pattern))} to {entries.shown(real)}"
        if why is None and real in seen:
            why = f"symlink_loop:the same file as {entries.shown(seen[real])}"
        seen.setdefault(real, p)
        units.append((p, why))
    if not units:
        raise FileNotFoundError(f"text_files source: no file matches {source.path}")
    return units


def _read_text_group(source: TextFilesSource, first: int, paths: list[tuple[str, str | None]],
                     policy: PathPolicy = PathPolicy()) -> pd.DataFrame:
    """Reads and decodes a group of text files (in a Ray task); file ``first + i`` holds positions
    ``(first + i) * FILE_STRIDE + line``."""
    rows = []
    for i, (p, known) in enumerate(paths):
        base = (first + i) * FILE_STRIDE
        if (known or "").split(":")[0] in ("", "symlink_outside") and policy.restricted and not policy.allows(p):
            known = f"path_not_allowed:{os.path.realpath(p)} is outside security.allowed_roots"  # the policy names it
        if not known:
            try:
                data = entries.read_regular(p, MAX_TEXT_FILE_BYTES)
            except entries.Unreadable as exc:
                known = f"{exc.reason}:{exc.detail}"
        if known:
            rows.append({"input_ref": entries.shown(p), "text": None, "encoding": None, "reject": known, "position": base})
            continue
        text, encoding = decode_text(data)
        if source.per == "file":
            units = [(text, encoding)]
        elif encoding == "latin-1":  # not UTF-8 as a whole: decide line by line (files that mix encodings)
            units = [decode_text(line) for line in data.splitlines()]
        else:
            units = [(line, encoding) for line in text.splitlines()]
        for k, (unit_text, unit_encoding) in enumerate(units or [("", encoding)]):
            rows.append({"input_ref": entries.shown(p) if source.per == "file" else f"{entries.shown(p)}:{k + 1}", "text": unit_text,
                         "encoding": unit_encoding, "reject": None, "position": base + min(k, FILE_STRIDE - 1)})
    df = pd.DataFrame(rows, columns=["input_ref", "text", "encoding", "reject", "position"])
    df["modality"] = "text"
    return _raw_frame(df, source.source_id)


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
        return dataset.schema, dataset.to_batches(batch_size=STAGE_CHUNK)

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


def _table(source: TableSource, policy: PathPolicy = PathPolicy()) -> Iterator[pd.DataFrame]:
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
