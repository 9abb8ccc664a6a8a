"""A real Ray cluster of two nodes on this machine, started with ``ray start`` as a user starts one.

Both nodes listen on loopback (``--node-ip-address 127.0.0.1``) with 2 CPUs each; the worker node also has
one ``accel``, a custom resource standing in for a GPU that only some nodes have. Token authentication is
on (``RAY_AUTH_MODE=token``, a token file of the fixture's own), every port is a free one, and a private
``RAY_TMPDIR`` holds the sessions and the ``ray_current_cluster`` file, so the suite's own Ray and any other
Ray on the machine are left alone. It is stopped by the pids of its processes, never by ``ray stop``
(which stops every Ray on the machine).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli_process import cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class RayStartCluster:
    address: str  # 127.0.0.1:PORT of the head's GCS
    tmpdir: Path  # RAY_TMPDIR of every process of the cluster
    token_path: Path

    def env(self, prefect_api: str | None = None, join: bool = True) -> dict[str, str]:
        """A CLI subprocess's environment on this machine: the cluster's temp folder (where a plain
        ``ray.init()`` finds ``ray_current_cluster``) and, to ``join``, its token."""
        extra = {"RAY_TMPDIR": str(self.tmpdir)}
        if join:
            extra.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return cli_env(prefect_api, **extra)


def _ray(*args: str, env: dict[str, str], log: Path) -> None:
    with open(log, "a") as out:
        proc = subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=180)
    if proc.returncode:
        raise RuntimeError(f"ray {' '.join(args[:2])} failed with {proc.returncode}: {log.read_text()[-3000:]}")


def _node_args() -> list[str]:
    return ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


def _cluster_pids(tmpdir: Path) -> set[int]:
    """Processes started for the cluster (their command line or environment names its temp folder) and all
    their descendants (Ray renames some of its processes, which hides both)."""
    marker, parents, pids = str(tmpdir).encode(), {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                pids.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in pids} - pids
        pids |= more
        grew = bool(more)
    return pids - {os.getpid()}


@pytest.fixture(scope="session")
def ray_start_cluster():
    tmpdir = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    token = tmpdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = cli_env(RAY_TMPDIR=str(tmpdir), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    log, port = tmpdir / "ray-start.log", free_port()
    try:
        _ray("start", "--head", "--port", str(port), "--dashboard-port", str(free_port()),
             "--ray-client-server-port", str(free_port()), *_node_args(), env=env, log=log)
        _ray("start", "--address", f"127.0.0.1:{port}", "--resources", '{"accel": 1}', *_node_args(), env=env, log=log)
        yield RayStartCluster(address=f"127.0.0.1:{port}", tmpdir=tmpdir, token_path=token)
    finally:
        pids = _cluster_pids(tmpdir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(3 if sig == signal.SIGTERM else 0)
