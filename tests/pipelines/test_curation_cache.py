"""A night's reading and curation are cached per night; a re-run reads again exactly when the files its reads left
are gone or no longer match the config (real Prefect, real Ray)."""

import os
import time

from prefect import flow

from jobs.data.curate import RAW, PreprocessResult, prune_raw_staging
from jobs.store.storage import Store
from pipelines.config import PipelineConfig, load_config
from pipelines.flows import _curate
from tests.conftest import TINY_CONFIG


@flow(name="curate-only")
def curate_only(config: PipelineConfig, run_date: str) -> PreprocessResult:
    return _curate(config, run_date, False)


def _night_folders(store: Store) -> list[str]:
    return [e for e in store.listdir("staging", "curated") if e.startswith(f"{RAW}.")]


def test_a_rerun_after_the_night_ended_with_another_preprocess_reads_the_sources_again(tmp_path, ray_local, prefect_server):
    store = Store(str(tmp_path / "root"))
    cfg = load_config(TINY_CONFIG, output=store.root)
    first = curate_only(cfg, "2026-02-01")
    assert _night_folders(store) and first.counts["inputs"] == 500  # kept while the night runs
    prune_raw_staging(store, "2026-02-01", 3600)  # the night ended: its read sources go
    assert _night_folders(store) == []
    again = curate_only(cfg, "2026-02-01")  # the same night again: everything cached, no files needed
    assert again.dataset_version == first.dataset_version
    changed = load_config(TINY_CONFIG, output=store.root, overrides=["preprocess.val_fraction=0.3"])
    other = curate_only(changed, "2026-02-01")  # cached reads, but of files that are gone: they are read again
    assert other.dataset_version != first.dataset_version and other.counts["inputs"] == 500


def test_old_raw_staging_of_other_nights_is_pruned_and_the_current_nights_kept(tmp_path):
    store = Store(str(tmp_path))
    for name in (f"{RAW}.2026-01-01.aaaa", f"{RAW}.2026-01-02.bbbb", f"{RAW}.2026-01-03.cccc", "raw.1234"):
        store.write_bytes(b"x", "staging", "curated", name, "raw", "source-0000-000000-000000.parquet")
    old = time.time() - 30 * 3600
    for f in store.files("staging", "curated", f"{RAW}.2026-01-01.aaaa"):
        os.utime(f, (old, old))
    gone = prune_raw_staging(store, "2026-01-03", 20 * 3600)
    assert sorted(g.rsplit("/", 1)[1] for g in gone) == [f"{RAW}.2026-01-01.aaaa", f"{RAW}.2026-01-03.cccc"]
    assert sorted(store.listdir("staging", "curated")) == [f"{RAW}.2026-01-02.bbbb", "raw.1234"]  # another night's, recent
