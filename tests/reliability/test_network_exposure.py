"""Scenario 11: network exposure.

While a real ``aigc generate`` runs (its own local Ray and Prefect's temporary server, as in the demo), every
listening socket of its process tree is on the loopback address; ``ray.listen: network`` is the opt-in.
With authentication on, anonymous requests are refused: Ray's dashboard without the cluster token
(token auth is Ray's default for a local instance), and a Prefect server started with
``PREFECT_SERVER_API_AUTH_STRING`` without the matching ``PREFECT_API_AUTH_STRING``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))"


def _tree(root: int) -> set[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def _listening() -> dict[int, str]:
    """Socket inode -> "address:port" of every listening TCP socket on this machine (from /proc/net)."""
    out = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            out[int(fields[9])] = f"{ipaddress.ip_address(packed)}:{int(hex_port, 16)}"
    return out


def _sockets_of(pids: set[int], listening: dict[int, str]) -> dict[str, str]:
    """"address:port" -> the name of the process holding it, for the listening sockets of ``pids``."""
    out = {}
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            # The program's own name first: a full path can be longer than any cut (CI checks out deeper).
            name = " ".join([Path(argv[0]).name, *argv[1:]])[:100]
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inode = int(link[8:-1])
                    if inode in listening:
                        out[listening[inode]] = name
        except OSError:  # the process ended while we looked
            continue
    return out


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_a_running_night_listens_on_loopback_only(tiny_night, tmp_path):
    _, source, _ = tiny_night
    root = tmp_path / "root"
    shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("checkpoints", "generated", "reports"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "RAY_ADDRESS"))}
    log = tmp_path / "night.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CLI, "generate", "--config", str(TINY_CONFIG),
                                 "--out", str(root), "--date", "2026-09-09"],
                                cwd=REPO, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    seen: dict[str, str] = {}
    try:
        while proc.poll() is None:
            seen.update(_sockets_of(_tree(proc.pid), _listening()))
            time.sleep(0.3)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log.read_text()[-3000:]
    names = " | ".join(seen.values())
    assert "gcs_server" in names and "raylet" in names and "uvicorn" in names, seen  # Ray's and Prefect's servers
    assert len(seen) >= 8, seen
    exposed = {addr: name for addr, name in seen.items() if not _is_loopback(addr)}
    assert not exposed, exposed


LISTEN_NETWORK = """
import sys, ray
from jobs.runtime.cluster import ensure_ray
from pipelines.config import load_config
cfg = load_config(sys.argv[1], ["ray.listen=network", "ray.dashboard=false", "ray.num_cpus=1"])
ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.listen, cfg.ray.dashboard)
print("GCS", ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_ray_listen_network_puts_the_local_cluster_on_the_machines_address(tmp_path):
    """The opt-in from the config: the GCS another machine would join listens on this machine's address and
    answers there (the default, above, keeps every socket on loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", LISTEN_NETWORK, str(TINY_CONFIG)], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        line = ""
        deadline = time.time() + 120
        while not line.startswith("GCS ") and time.time() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert line.startswith("GCS "), f"no GCS address (exit {proc.poll()})"
        host, port = line.split()[1].rsplit(":", 1)
        assert not _is_loopback(f"{host}:0"), host
        seen = _sockets_of(_tree(proc.pid), _listening())
        gcs = [addr for addr, name in seen.items() if "gcs_server" in name and addr.endswith(f":{port}")]
        assert gcs and not any(_is_loopback(a) for a in gcs), seen
        with socket.create_connection((host, int(port)), timeout=10):  # reachable at the machine's address
            pass
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass


def _token() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return Path(path).read_text().strip()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


DASHBOARD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.reliability.test_network_exposure import _is_loopback, _status, _token
from jobs.runtime.cluster import dashboard_url, ensure_ray

ensure_ray(num_cpus=1)  # a local instance as `aigc` starts it: dashboard on, token auth as Ray's default
url = dashboard_url()
print(json.dumps({"url": url, "loopback": bool(url) and _is_loopback(url.split("//")[1].split("/")[0]),
                  "anonymous": _status(f"{url}/api/version"),
                  "wrong": _status(f"{url}/api/version", {"Authorization": "Bearer not-the-token"}),
                  "token": _status(f"{url}/api/version", {"Authorization": f"Bearer {_token()}"})}))
"""


def test_ray_refuses_requests_without_the_cluster_token(tmp_path):
    """In a Ray of its own (the suite's shared instance runs without a dashboard)."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    run = subprocess.run([sys.executable, "-c", DASHBOARD, str(REPO)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["url"] and seen["loopback"], seen
    assert (seen["anonymous"], seen["wrong"], seen["token"]) == (401, 403, 200), seen


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_prefect_server_with_an_auth_string_refuses_anonymous_clients(tmp_path, free_port):
    secret = "aigc:not-a-real-password"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_API_AUTH_STRING": secret,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(free_port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{free_port}/api"
    basic = {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    try:
        deadline = time.time() + 180
        while _status_or_none(f"{api}/health", basic) != 200:
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        assert _status(f"{api}/health") == 200  # the probe Kubernetes uses stays open, and says nothing
        assert _status(f"{api}/version") == 401  # anonymous
        wrong = {"Authorization": "Basic " + base64.b64encode(b"aigc:guess").decode()}
        assert _status(f"{api}/version", wrong) == 401
        assert _status(f"{api}/version", basic) == 200
        client = {**env, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": secret}
        client.pop("PREFECT_SERVER_API_AUTH_STRING")
        run = subprocess.run([sys.executable, "-c", FLOW], env=client, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0 and run.stdout.strip().endswith("42"), run.stderr[-3000:]
        anonymous = {k: v for k, v in client.items() if k != "PREFECT_API_AUTH_STRING"}
        refused = subprocess.run([sys.executable, "-c", FLOW], env=anonymous, capture_output=True, text=True, timeout=180)
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


FLOW = """
from prefect import flow

@flow
def answer():
    return 42

print(answer())
"""


def _status_or_none(url: str, headers: dict[str, str]) -> int | None:
    try:
        return _status(url, headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
