"""Training on a 2-node Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``), one worker
per node (``placement_strategy: STRICT_SPREAD``), with half a CPU per worker so Ray Data has room too; one
worker process is killed mid-run (fault ``train-worker-kill``: the last worker SIGKILLs itself once a
checkpoint has reached Ray Train's controller) and the run must resume from that checkpoint and finish.

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

root = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level="ERROR")

from jobs.store import registry
from jobs.data.curate import run_preprocess
from jobs.data.spec import BuiltinSource, PreprocessSpec
from jobs.train.spec import ModelSpec, TrainSpec
from jobs.store.storage import Store
from jobs.train.run import run_training

store = Store(root)
run_preprocess([BuiltinSource(kind="builtin", name="digits", limit=160)], PreprocessSpec(resolution=8, channels=1), store)
spec = ModelSpec(name="mn", family="vae", z_dim=4, width=4, epochs=int(sys.argv[3]))
train = TrainSpec(num_workers=2, resources_per_worker={"CPU": 0.5}, placement_strategy="STRICT_SPREAD", batch_size=16,
                  checkpoint_every=1, max_failures=2, sample_grid=1)
os.environ["AIGC_FAULT"], os.environ["AIGC_FAULT_MARKER"] = f"train-worker-kill:1:{sys.argv[2]}", root + "/fault"
result = run_training(spec, train, store)
card = registry.resolve(store, "mn").card
print(json.dumps({"worker_nodes": len({w["node_id"] for w in card.workers}), "alive_nodes": len(ray.nodes()),
                  "steps": result.steps, "epochs": result.epochs, "resumed_from": card.resumed_from}), flush=True)
ray.shutdown()
cluster.shutdown()
os._exit(0)  # skip interpreter teardown of the half-dead cluster's handles
'''


def test_two_node_training_survives_a_killed_worker_and_places_one_worker_per_node(tmp_path):
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "5", "4"], capture_output=True, text=True,
                         timeout=500, cwd=repo)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "injected fault: worker 1" in out.stdout + out.stderr  # the worker did die
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["alive_nodes"] == 2 and result["worker_nodes"] == 2  # one worker on each node (the card's list)
    assert result["epochs"] == 4 and result["steps"] > 5
    assert result["resumed_from"] is not None and result["resumed_from"]["step"] >= 5  # not from step 0
