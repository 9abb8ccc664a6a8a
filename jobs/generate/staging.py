"""A night's staging folder: what it already holds, so an interrupted night resumes instead of starting over.

The folder is ``ROOT/staging/generated/date=D.<fingerprint>`` (``jobs.store.commit.resumable_staging``): named by
what the night will produce, so only a re-run of the same work finds it. It holds the accepted rows' Parquet
files, ``_rejected/`` (refused rows) and ``_actors/`` (per-actor statistics); the top-up plans live beside it
(``<folder>.progress.json``), so they outlive the folder's commit until the night ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.store import layout
from jobs.store.storage import Store

REJECTED = "_rejected"  # refused rows, committed to ROOT/rejects/generated/date=D
ACTORS = "_actors"  # one small JSON per sampling actor (never published)


@dataclasses.dataclass(frozen=True)
class StagedOutput:
    """Where the finishing side writes accepted rows, and their row-group size (rows)."""

    folder: str
    group_rows: int


class PartWriter:
    """Streams tables into one Parquet file of the staging folder, in row groups of ``group_rows``, and names it
    by the ids it holds when it closes: a retried batch of the same rows replaces its own file, never adds one.
    Until then it is a ``.tmp-`` sibling, which the end of the pass or a resumed night deletes
    (``NightStaging.drop_temporary``) if it was never closed."""

    def __init__(self, store: Store, folder: str, group_rows: int) -> None:
        self.store, self.folder, self.group_rows = store, folder, max(1, group_rows)
        self.tmp = store.path(folder, f".tmp-{uuid.uuid4().hex}")
        self.pending: list[pa.Table] = []
        self.ids = hashlib.sha256()
        self.rows, self.pending_rows, self.writer = 0, 0, None

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.ids.update("\n".join(table.column("id").to_pylist()).encode() + b"\n")
        self.rows += table.num_rows
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table, self.pending, self.pending_rows = pa.concat_tables(self.pending), [], 0
        if self.writer is None:
            self.store.makedirs(self.folder)
            self.writer = pq.ParquetWriter(self.tmp, table.schema, filesystem=self.store.fs)
        self.writer.write_table(table, row_group_size=self.group_rows)

    def close(self) -> int:
        """Rows written (0: no file)."""
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.store.fs.move(self.tmp, self.store.path(self.folder, f"{self.ids.hexdigest()[:24]}.parquet"))
        return self.rows


class NightStaging:
    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path = store, path

    def files(self, rejected: bool = False) -> list[str]:
        """Accepted rows' files (or, with ``rejected``, refused rows' files) written so far, whole or not."""
        if rejected:
            return self.store.files(self.path, REJECTED, suffix=".parquet")
        return [f for f in self.store.files(self.path, suffix=".parquet") if not self.store.relpath(f, self.path).startswith("_")]

    def drop_temporary(self) -> None:
        """Deletes the ``.tmp-`` files of writes that never finished (a killed actor's, or a killed
        ``Store.write_bytes``'s): never published, and their rows are in a finished file or generated again."""
        for where in (self.path, f"{self.path}/{REJECTED}"):
            for f in self.store.files(where):
                if ".tmp-" in f.rsplit("/", 1)[-1]:
                    self.store.fs.delete_file(f)

    def drop_truncated(self) -> int:
        """Deletes files a killed run left half-written (no readable footer); their rows are generated again."""
        self.drop_temporary()
        dropped = 0
        for f in self.files() + self.files(rejected=True):
            try:
                pq.read_metadata(f, filesystem=self.store.fs)
            except (pa.ArrowInvalid, OSError):
                self.store.fs.delete_file(f)
                dropped += 1
        return dropped

    def ids(self) -> frozenset:
        out: set = set()
        for f in self.files() + self.files(rejected=True):
            out.update(pq.read_table(f, columns=["id"], filesystem=self.store.fs).column("id").to_pylist())
        return frozenset(out)

    def rows(self) -> int:
        """Accepted rows in whole files so far (Parquet footers only): the night's progress."""
        total = 0
        for f in layout.data_files(self.store, self.path):
            try:
                total += pq.read_metadata(f, filesystem=self.store.fs).num_rows
            except (pa.ArrowInvalid, OSError):  # still being written
                continue
        return total

    def accepted_per_cell(self) -> Counter:
        """Accepted rows per (request id, label, prompt): what each cell still lacks decides the top-up."""
        counts: Counter = Counter()
        for f in self.files():
            t = pq.read_table(f, columns=["request_id", "label", "prompt"], filesystem=self.store.fs)
            counts.update(zip(t.column("request_id").to_pylist(), t.column("label").to_pylist(), t.column("prompt").to_pylist()))
        return counts

    @property
    def progress(self) -> str:
        """Beside the staging folder, not in it: it must outlive the folder's commit until the end."""
        return f"{self.path}.progress.json"

    def plans(self) -> list[list[dict[str, Any]]]:
        return self.store.read_json(self.progress)["plans"] if self.store.exists(self.progress) else []

    def save_plans(self, plans: list[list[dict[str, Any]]]) -> None:
        self.store.write_json({"plans": plans}, self.progress)

    def discard(self) -> None:
        """Drops the folder and its resume state: a re-run generates the night anew."""
        self.store.delete(self.path)
        self.store.delete(self.progress)
