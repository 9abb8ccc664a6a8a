"""What a reader of a dataset folder reads (``layout.data_files``) and paths relative to a folder."""

import pytest

from jobs.store import layout
from jobs.store.storage import Store


def test_data_files_are_the_parquet_files_a_reader_reads(tmp_path):
    store = Store(str(tmp_path))
    for name in ("a.parquet", "sub/b.parquet", "_rejected/c.parquet", ".hidden/d.parquet", "e.parquet.tmp-1a2b",
                 "f.json", "sub/_actors/g.parquet"):
        store.write_bytes(b"x", "night", name)
    store.write_bytes(b"x", "night.tmp-0000.parquet")
    assert [store.relpath(f, "night") for f in layout.data_files(store, "night")] == ["a.parquet", "sub/b.parquet"]
    with pytest.raises(ValueError, match="is not under"):
        store.relpath(store.path("other", "x.parquet"), "night")
    assert layout.rejects(layout.GENERATED, layout.night("2026-01-02")) == "rejects/generated/date=2026-01-02"
