"""Session-wide real engines: one local Ray and one Prefect test server for the whole suite, and (for the
object-store tests) one S3-compatible server, moto's server mode, on a free localhost port.

Starting either takes seconds (Prefect's server 15-25 s here), so every test shares them. The tiny night
(``tiny_night``) runs the real ``nightly`` flow once; the tests that read its outputs share it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # Ray Train's controller polls (2 s by default)
os.environ.setdefault("AIGC_RETRY_DELAYS", "1,1")  # Prefect task retries in seconds: the suite's injected faults retry fast
os.environ.setdefault("AIGC_KEYS_DIR", tempfile.mkdtemp(prefix="aigc-dev-keys-"))  # the nights' development chain

TESTS = Path(__file__).resolve().parent
TINY_CONFIG = TESTS / "configs" / "tiny.yaml"
RUN_DATE = "2026-11-20"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from jobs.runtime.cluster import ensure_ray

    ensure_ray(num_cpus=4, dashboard=False)  # its processes take ~5% of a 2-core machine; the auth test starts one
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api(prefect_server) -> str:
    """The suite's Prefect server (a real one, shared by the whole session), for CLI subprocesses that are not
    about Prefect's start (they skip starting a temporary server of their own)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_config():
    from pipelines.config import load_config

    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_night(tmp_path_factory, ray_local, prefect_server):
    """The real nightly flow on the tiny config: (config, Store, flow result)."""
    from jobs.store.storage import Store
    from pipelines.config import as_dict, load_config
    from pipelines.flows import nightly_flow

    root = tmp_path_factory.mktemp("night")
    cfg = load_config(TINY_CONFIG, output=str(root))
    result = nightly_flow(as_dict(cfg), RUN_DATE)
    return cfg, Store(str(root)), result


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server: where it listens, its bucket and the (fake) keys it is used with."""
    endpoint: str  # host:port
    bucket: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def uri(self, prefix: str) -> str:
        """ROOT for ``prefix`` in the bucket. The keys ride in the URI (pyarrow's ``s3://KEY:SECRET@...``)
        rather than in AWS_* variables: Ray's workers keep the environment of the moment Ray started, which
        may be before this server existed."""
        return (f"s3://{self.access_key}:{self.secret_key}@{self.bucket}/{prefix}"
                f"?endpoint_override={self.endpoint}&scheme=http&region={self.region}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server in a subprocess (not in-process: Ray workers and pyarrow's S3 client threads stay
    out of its way), with one bucket; stopped at the end of the session."""
    import pyarrow.fs as pafs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except urllib.error.HTTPError:  # any HTTP answer means it is up
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port} (see {log.name})") from None
                time.sleep(0.2)
        server = S3Server(endpoint=f"127.0.0.1:{port}", bucket="aigc-test")
        pafs.S3FileSystem(access_key=server.access_key, secret_key=server.secret_key, region=server.region,
                          endpoint_override=server.endpoint, scheme="http",
                          allow_bucket_creation=True).create_dir(server.bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_root(s3_server) -> str:
    """A fresh ROOT on the S3 server for one test."""
    return s3_server.uri(f"t-{uuid.uuid4().hex[:10]}")
