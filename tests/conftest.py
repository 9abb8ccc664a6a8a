"""Session-wide real engines: one local Ray and one Prefect test server for the whole suite.

Starting either takes seconds (Prefect's server 15-25 s here), so every test shares them. The tiny night
(``tiny_night``) runs the real ``nightly`` flow once; the tests that read its outputs share it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

TESTS = Path(__file__).resolve().parent
TINY_CONFIG = TESTS / "configs" / "tiny.yaml"
RUN_DATE = "2026-11-20"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from jobs.ray_runtime import ensure_ray

    ensure_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_config():
    from pipelines.config import load_config

    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_night(tmp_path_factory, ray_local, prefect_server):
    """The real nightly flow on the tiny config: (config, Store, flow result)."""
    from jobs.storage import Store
    from pipelines.config import as_dict, load_config
    from pipelines.flows import nightly_flow

    root = tmp_path_factory.mktemp("night")
    cfg = load_config(TINY_CONFIG, output=str(root))
    result = nightly_flow(as_dict(cfg), RUN_DATE)
    return cfg, Store(str(root)), result
