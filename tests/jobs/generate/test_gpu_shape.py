"""A GPU night's shape on a CPU machine: a 2-node ``ray.cluster_utils.Cluster`` whose second node declares one
(logical) GPU. With ``generate.use_gpu`` the sampling actors ask for it, so they run there (the model falls back
to the CPU, as ``SamplingActor`` does where CUDA is missing), and the finishing actors run on CPUs beside them:
the two-pool path the CPU nights of the suite never take. Its rows must be the CPU night's, pixel for pixel.

The cluster needs a Ray of its own, so the scenario runs in a subprocess (the session's local Ray stays up).
"""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import json, os, sys
import ray
from ray.cluster_utils import Cluster

root, date, use_gpu = sys.argv[1], sys.argv[2], sys.argv[3] == "gpu"
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
ray.init(address=cluster.address, logging_level="ERROR")

import pyarrow.dataset as pads
from jobs.generate.manifest import publish_night
from jobs.generate.run import run_generation
from jobs.store.storage import Store
from pipelines.config import load_config

cfg = load_config(sys.argv[4], output=root)
spec = cfg.generate.model_copy(update={"use_gpu": use_gpu, "concurrency": 1, "encode_concurrency": 1,
                                       "batch_size": 5})
store = Store(root)
result = run_generation(spec, store, date, "gpu-shape", publish_now=False)
nodes = sorted({store.read_json(store.relpath(f))["node"] for f in store.files(result.staging, "_actors")})
result = publish_night(store, result)
t = pads.dataset(store.path("generated", f"date={date}"), format="parquet").to_table(columns=["id", "content_sha256"])
print(json.dumps({"rows": result.rows, "rejected": result.rejected, "gpu_node": gpu_node.node_id,
                  "content": dict(zip(t.column("id").to_pylist(), t.column("content_sha256").to_pylist())),
                  "sampling_nodes": nodes}), flush=True)
ray.shutdown()
cluster.shutdown()
os._exit(0)
'''


def _night(root, date: str, device: str) -> dict:
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(root), date, device, str(repo / "tests/configs/tiny.yaml")],
                         capture_output=True, text=True, timeout=500, cwd=repo)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_gpu_night_samples_on_the_gpu_node_finishes_on_cpus_and_makes_the_cpu_nights_rows(tiny_night):
    _, store, _ = tiny_night
    cpu = _night(store.root, "2026-02-02", "cpu")
    gpu = _night(store.root, "2026-02-02", "gpu")  # the same night again (its fingerprint names the device)
    assert gpu["rows"] == cpu["rows"] == 18 and gpu["rejected"] == cpu["rejected"] == 0
    assert gpu["content"] == cpu["content"]  # the same rows, pixel for pixel and text for text
    assert gpu["sampling_nodes"] == [gpu["gpu_node"]]  # the sampling actor ran on the node with the GPU
    assert len(cpu["sampling_nodes"]) == 1  # one generating actor sampled the CPU night
