"""The deployment files in deploy/ are parsed and checked against the code and configs they start (no
Kubernetes, cloud or Prefect server here): versions, entrypoints, resources and schedules must agree."""

import re
from importlib.metadata import version
from pathlib import Path

import yaml

from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CLUSTER = load_config(ROOT / "configs" / "cluster.yaml")


def _yaml(name):
    return yaml.safe_load((DEPLOY / name).read_text())


def _gpu_capacity(spec):
    """(GPU workers at most, GPUs per worker pod) of a RayCluster spec's GPU groups."""
    total = 0
    assert spec["workerGroupSpecs"], "no worker groups"
    for group in spec["workerGroupSpecs"]:
        assert group["template"]["spec"]["containers"], group.get("groupName")
        for c in group["template"]["spec"]["containers"]:
            gpus = int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
            assert gpus == int(c["resources"]["requests"].get("nvidia.com/gpu", 0)), "GPU requests must equal limits"
            total += gpus * group["maxReplicas"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    return total


def test_kuberay_cluster_and_job_fit_the_cluster_config():
    cluster, job = _yaml("kuberay/raycluster.yaml"), _yaml("kuberay/rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # one shape, two ways to run it
    assert cluster["spec"]["rayVersion"] == version("ray")  # the pinned Ray, as in constraints.txt
    gpus = _gpu_capacity(cluster["spec"])
    assert CLUSTER.train.use_gpu and gpus >= CLUSTER.train.num_workers
    assert CLUSTER.generate.use_gpu and gpus >= CLUSTER.generate.pool()[1] * CLUSTER.generate.num_gpus_per_actor
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs the driver, not the work
    argv = job["spec"]["entrypoint"].split()
    assert argv[:2] == ["aigc", "nightly"] and (ROOT / argv[argv.index("--config") + 1]).is_file()
    images = {c["image"] for g in [head, *cluster["spec"]["workerGroupSpecs"]] for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1  # head, workers and driver share one image


def test_the_cluster_configs_signing_chain_is_mounted_where_the_driver_runs():
    """The driver (on the head) loads the chain before any work: each signing.* path must lie in a secret the
    head container mounts, or the night exits 2 on the cluster."""
    head = _yaml("kuberay/raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]
    secrets = {v["name"] for v in head.get("volumes", []) if "secret" in v}
    mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", []) if m["name"] in secrets]
    paths = [CLUSTER.signing.certificate, CLUSTER.signing.private_key, CLUSTER.signing.trust_anchors]
    assert CLUSTER.signing.enabled and all(paths)  # a GPU cluster signs with the team's chain, not a development one
    for path in paths:
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), path


def test_dockerfile_pins_the_versions_the_project_is_tested_with():
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+?)-py(\d)(\d+)-cu", text, re.M)
    assert base and base.group(1) == version("ray") and (base.group(2), base.group(3)) == ("3", "11")
    assert f'"ray[default,data,train]=={version("ray")}"' in text and f'"prefect=={version("prefect")}"' in text
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+) ", text, re.M)
    assert copied  # a Dockerfile that copies nothing of the project checks nothing here
    for path in copied:
        assert (ROOT / path).exists(), path


def test_cluster_launcher_matches_the_kuberay_shape():
    launcher = _yaml("cluster-launcher.yaml")
    nodes = launcher["available_node_types"]
    assert launcher["head_node_type"] in nodes and nodes[launcher["head_node_type"]]["resources"]["CPU"] == 0
    gpu = sum(n["resources"].get("GPU", 0) * n["max_workers"] for n in nodes.values() if "max_workers" in n)
    assert gpu >= CLUSTER.train.num_workers and launcher["max_workers"] >= max(n.get("max_workers", 0) for n in nodes.values())


def test_prefect_deployments_point_at_a_real_flow_with_the_configs_schedule():
    import inspect

    from pipelines import flows

    doc = _yaml("prefect.yaml")
    assert doc["prefect-version"] == version("prefect")
    assert doc["deployments"]
    for d in doc["deployments"]:
        module, name = d["entrypoint"].split(":")
        assert (ROOT / module).is_file()
        flow = getattr(flows, name)
        assert set(d["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        cfg = load_config(ROOT / d["parameters"]["config_path"])
        assert d["schedules"] == [{"cron": cfg.schedule.cron, "timezone": cfg.schedule.timezone}]
        assert d["concurrency_limit"] == 1  # nights never overlap
