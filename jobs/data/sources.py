"""Reading the configured sources into raw units (``jobs.data.raw``), staged as Parquet for preprocessing.

Images are read lazily: a unit carries its ``path`` and the cleaning task (on Ray) reads the bytes. Folder
trees are walked and text files read in Ray tasks too (``stage_source``), so the driver lists only the top
level; tables and built-ins stream from the driver batch by batch. Each kind of source has its module:
``builtins``, ``folders``, ``text_files``, ``tables``.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from jobs.data.builtins import BUILTINS
from jobs.data.folders import image_folder_walks, walk_group
from jobs.data.raw import RAW_SCHEMA, raw_frame
from jobs.data.spec import BuiltinSource, ImageFolderSource, Source, TableSource, TextFilesSource
from jobs.data.tables import table_units
from jobs.data.text_files import FILES_PER_TASK, read_text_group, text_units
from jobs.store.paths import PathPolicy
from jobs.store.storage import Store

STAGE_CHUNK = 5000  # raw units per staged file: Ray Data reads the files in parallel
SOURCE_STRIDE = 10**15  # position = source index * SOURCE_STRIDE + place in the source


def read_source(source: TableSource | BuiltinSource, policy: PathPolicy = PathPolicy()) -> Iterator[pd.DataFrame]:
    """Raw units of a table (streamed batch by batch) or a built-in dataset, in chunks."""
    chunks = table_units(source, policy) if isinstance(source, TableSource) else [BUILTINS[source.name]()]
    for df in chunks:
        yield raw_frame(df, source.source_id)


def stage_source(source: Source, index: int, store: Store, staging: str, policy: PathPolicy = PathPolicy()) -> int:
    """Reads one source into raw-unit Parquet files under ``staging/raw/`` and returns how many units it
    had. ``position`` keeps the input order across sources (source index, then place) for "first one wins".

    Folders and text files are listed here (names only) and read in Ray tasks: one task per top-level
    folder of an image folder, one per ``FILES_PER_TASK`` text files; tables and built-ins stream from
    here batch by batch. Memory on this process stays flat either way. With ``limit`` set, everything
    runs here in input order and stops early (``limit`` is for trying a config on a sample).

    With a restricted ``policy`` (``security.allowed_roots``), files whose real path lies outside the roots
    (links, ``..`` in a table cell, another bucket) become ``path_not_allowed`` rejects and are never opened.
    Files an earlier read of the same source left in ``staging`` are replaced.
    """
    for f in _staged_files(store, staging, index):
        store.fs.delete_file(f)
    if isinstance(source, ImageFolderSource):
        groups, by_folder = image_folder_walks(source)
        work = [(walk_group, (source, g, starts, by_folder, policy)) for g, starts in enumerate(groups)]
    elif isinstance(source, TextFilesSource):
        paths = text_units(source)
        work = [(read_text_group, (source, first, paths[first:first + FILES_PER_TASK], policy))
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


def _staged_files(store: Store, staging: str, index: int) -> list[str]:
    return [f for f in store.files(staging, "raw", suffix=".parquet") if f.rsplit("/", 1)[-1].startswith(f"source-{index:04d}-")]


def staged_units(store: Store, staging: str, index: int) -> int:
    """How many raw units of source ``index`` lie in ``staging`` (Parquet footers only)."""
    return sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in _staged_files(store, staging, index))


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
