"""The nightly pipeline on a real Ray cluster started with ``ray start``: two nodes of 2 CPUs on loopback,
token authentication on, the worker node holding the only ``accel`` (a stand-in for a GPU few nodes have).

Before, ``aigc nightly --ray-address`` on such a cluster trained both models and then hung in generation:
the sampling and finishing actors, spread one of each per node, left half a CPU on each node, so the 1-CPU
read and write tasks could never be placed while Ray Data counted one free CPU. Now the pools are checked
against the nodes' resources first (``jobs/runtime/capacity.py``), the stages between actors ask for what fits,
and a pool the cluster can never hold (or cannot start in time) fails with the key to change. (A CPU night now
runs one pool of generating actors, sampling and finishing in one process; the placement check is the same.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.store.credentials import read_png

from tests.cli_process import run_aigc
from tests.conftest import RUN_DATE, TINY_CONFIG

pytestmark = pytest.mark.heavy
BOUND_S = 150  # a command that must fail "at once" is killed (and the test fails) past this: start-up included


@pytest.fixture(scope="module")
def cluster_night(ray_start_cluster, prefect_api, tmp_path_factory):
    """``aigc nightly --ray-address HEAD`` end to end, with the pool sizes of the demo (the ones that hung)."""
    root = tmp_path_factory.mktemp("cluster-night")
    code, out, _ = run_aigc("nightly", "--config", str(TINY_CONFIG), "--out", str(root), "--date", RUN_DATE,
                            "--ray-address", ray_start_cluster.address, "--set", "generate.concurrency=2",
                            "--set", "generate.encode_concurrency=[1, 2]", log=root.parent / "night.log",
                            env=ray_start_cluster.env(prefect_api))
    return root, code, out


def _joined(out: str, cluster) -> str:
    """What the ``[ray] joined`` line says after the GCS address (Ray resolves 127.0.0.1 to the node's IP)."""
    port = cluster.address.rsplit(":", 1)[1]
    line = next(l for l in out.splitlines() if l.startswith("[ray] joined the Ray cluster at "))
    gcs, rest = line.removeprefix("[ray] joined the Ray cluster at ").split(" ", 1)
    assert gcs.endswith(f":{port}"), line
    return rest.split(";")[0]


def _rows(root, run_date: str):
    return pq.read_table(root / "generated" / f"date={run_date}", columns=["id", "modality", "model_name"])


def test_the_nightly_flow_finishes_on_a_two_node_ray_start_cluster(cluster_night, ray_start_cluster):
    root, code, out = cluster_night
    assert code == 0, out[-5000:]
    assert _joined(out, ray_start_cluster) == f"({ray_start_cluster.address}): 2 nodes, 4 CPU, 0 GPU"
    rows = _rows(root, RUN_DATE)
    assert rows.num_rows == 18 and sorted(set(rows.column("model_name").to_pylist())) == ["tiny-gan", "tiny-gpt"]
    assert (root / "reports" / f"run_date={RUN_DATE}" / "index.html").is_file()
    for model in ("tiny-gan", "tiny-gpt"):
        assert (root / "models" / model / "production.json").is_file()
    # what it cost was sampled on both nodes; images signed by finishing actors on either node verify
    report = json.loads((root / "reports" / f"run_date={RUN_DATE}" / "report.json").read_text())
    assert len(report["cost"]["total"]["nodes"]) == 2 and report["cost"]["total"]["cpu_seconds"] > 0
    trust = (Path(os.environ["AIGC_KEYS_DIR"]) / "root.pem").read_bytes()
    images = pq.read_table(root / "generated" / f"date={RUN_DATE}", columns=["image", "modality"]).to_pylist()
    assert all(read_png(r["image"]["bytes"], trust).problems == [] for r in images if r["modality"] == "image")


def test_ray_address_auto_joins_the_cluster_this_machine_runs(cluster_night, ray_start_cluster, prefect_api, tmp_path):
    root, code, _ = cluster_night
    assert code == 0
    code, out, _ = run_aigc("generate", "--config", str(TINY_CONFIG), "--out", str(root), "--date", "2026-11-21",
                            "--count", "4", "--ray-address", "auto", log=tmp_path / "auto.log",
                            env=ray_start_cluster.env(prefect_api))
    assert code == 0, out[-4000:]
    assert _joined(out, ray_start_cluster) == "(auto): 2 nodes, 4 CPU, 0 GPU"
    assert _rows(root, "2026-11-21").num_rows == 4


def test_a_generator_asking_for_a_scarce_resource_gets_the_pool_the_cluster_can_hold(cluster_night, ray_start_cluster,
                                                                                        prefect_api, tmp_path):
    """Only the worker node has an ``accel``: an autoscaling pool of up to 2 runs with 1, there."""
    root, code, _ = cluster_night
    assert code == 0
    code, out, _ = run_aigc("generate", "--config", str(TINY_CONFIG), "--out", str(root), "--date", "2026-11-22",
                            "--ray-address", ray_start_cluster.address, "--set", "generate.resources_per_actor={accel: 1}",
                            "--set", "generate.concurrency=[1, 2]", log=tmp_path / "scarce.log",
                            env=ray_start_cluster.env(prefect_api))
    assert code == 0, out[-4000:]
    assert "[generate] the cluster fits 1 generating actors (the config allows up to 2): using 1" in out
    assert _rows(root, "2026-11-22").num_rows == 18


def test_what_the_cluster_can_never_hold_fails_at_once_naming_the_key(cluster_night, ray_start_cluster, prefect_api,
                                                                       tmp_path):
    root, code, _ = cluster_night
    assert code == 0
    env, address = ray_start_cluster.env(prefect_api), ray_start_cluster.address
    code, out, _ = run_aigc("generate", "--config", str(TINY_CONFIG), "--out", str(root), "--date", "2026-11-23",
                            "--ray-address", address, "--set", "generate.resources_per_actor={accel: 1}",
                            "--set", "generate.concurrency=2", log=tmp_path / "two.log", env=env, timeout=BOUND_S)
    assert code == 1, out[-4000:]
    assert "generate.concurrency: generation cannot fit the Ray cluster: short of accel 1 in total" in out
    assert not (root / "generated" / "date=2026-11-23").exists()
    code, out, _ = run_aigc("train", "--config", str(TINY_CONFIG), "--out", str(root), "--model", "tiny-gan",
                            "--ray-address", address, "--set", "train.num_workers=5", "--fresh",
                            log=tmp_path / "train.log", env=env, timeout=BOUND_S)
    assert code == 1, out[-4000:]
    assert "train.num_workers: training tiny-gan cannot fit the Ray cluster: short of CPU 1 in total" in out
    code, out, _ = run_aigc("train", "--config", str(TINY_CONFIG), "--out", str(root), "--model", "tiny-gan",
                            "--ray-address", address, "--set", "train.placement_strategy=STRICT_PACK",
                            "--set", "train.num_workers=3", "--fresh", log=tmp_path / "pack.log", env=env, timeout=BOUND_S)
    assert code == 1, out[-4000:]
    assert "enough in total, but no node has CPU 3 left" in out  # 4 CPUs, but no node with 3


HOLD = r'''
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
@ray.remote(resources={"accel": 1}, num_cpus=0)
class Holder:
    def ready(self):
        return True
h = Holder.remote()
ray.get(h.ready.remote())
print("holding", flush=True)
time.sleep(600)
'''


def test_a_pool_that_other_work_keeps_from_starting_fails_after_its_timeout(cluster_night, ray_start_cluster,
                                                                          prefect_api, tmp_path):
    """The cluster fits the pool, but another job holds the only ``accel``: the night waits
    ``generate.actor_start_timeout_s``, then fails saying so; it never waits for ever."""
    root, code, _ = cluster_night
    assert code == 0
    env = ray_start_cluster.env(prefect_api)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, ray_start_cluster.address], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while "holding" not in (line := holder.stdout.readline()):
            assert holder.poll() is None and time.time() < deadline, f"the holder did not start: {line}"
        code, out, _ = run_aigc("generate", "--config", str(TINY_CONFIG), "--out", str(root), "--date", "2026-11-24",
                                "--ray-address", ray_start_cluster.address,
                                "--set", "generate.resources_per_actor={accel: 1}",
                                "--set", "generate.actor_start_timeout_s=5", log=tmp_path / "held.log", env=env,
                                timeout=BOUND_S + 5)
    finally:
        holder.kill()
        holder.wait()
    assert code == 1, out[-4000:]
    assert "generate.actor_start_timeout_s: the generation actors (1 generating (sampling and finishing) with CPU 1, accel 1 each" in out
    assert "did not all start within 5s" in out
    assert not (root / "generated" / "date=2026-11-24").exists()
