"""First contact, as a new user has it: a clean machine's empty home, on a machine where Ray already runs.

- An empty ``HOME`` and ``PREFECT_HOME``: no ``~/.prefect`` (Prefect's temporary server creates and migrates
  its database on its first start, which on a busy 2-core machine took longer than Prefect's 20 s wait and
  failed the first ``make demo``), no ``~/.ray``, no ``~/.cache``. The machine is kept busy while the server
  starts, as it was when the first run failed.
- A ``ray start`` cluster is running, and its ``ray_current_cluster`` file names it: a plain ``ray.init()``
  joins it and then refuses ``num_cpus`` ("When connecting to an existing cluster, num_cpus and num_gpus
  must not be provided"). With no address configured, ``aigc`` starts its own local instance.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.cli_process import run_aigc
from tests.conftest import RUN_DATE, TINY_CONFIG

pytestmark = pytest.mark.heavy
# Both cores busy from before the night starts until its Prefect server is up (what the first failed run met),
# then free: the rest of the night is the same on a quiet machine, and 2 spinning cores only slow it down.
BUSY = """import sys, time
end, log = time.time() + 120, sys.argv[1]
while time.time() < end:
    for _ in range(10**6): pass
    try:
        if "temporary server ready" in open(log).read(): break
    except FileNotFoundError: pass
"""


def test_the_first_night_on_an_empty_home_beside_a_running_ray(ray_start_cluster, tmp_path):
    home, root = tmp_path / "home", tmp_path / "runs"
    home.mkdir()
    assert (ray_start_cluster.tmpdir / "ray" / "ray_current_cluster").is_file()  # what a plain ray.init() joins
    env = ray_start_cluster.env(join=False)  # no address, no token: a user who never configured Ray
    env = {k: v for k, v in env.items() if not k.startswith(("PREFECT_", "XDG_", "HF_", "TORCH_HOME", "AIGC_KEYS_DIR"))}
    env.update(HOME=str(home), PREFECT_HOME=str(home / ".prefect"), PYTHONUNBUFFERED="1")  # the busy loops read its log
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(tmp_path / "night.log")]) for _ in range(2)]
    try:
        code, out, _ = run_aigc("nightly", "--config", str(TINY_CONFIG), "--out", str(root), "--date", RUN_DATE,
                                "--set", "ray.dashboard=false", log=tmp_path / "night.log", env=env)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert code == 0, out[-5000:]
    assert "[prefect] starting Prefect's temporary local server (first start on this machine: it creates its " \
           f"database {home / '.prefect' / 'prefect.db'}" in out
    assert "[prefect] temporary server ready at http://127.0.0.1:" in out
    assert "[ray] started a local Ray instance: 1 node, 4 CPU" in out  # not the running 2-node cluster
    lines = out.splitlines()  # a console a person reads: stages, progress, the summary; the rest in the log
    assert len(lines) < 60 and "generate done in" in out and not any("Execution plan" in l or "Task run" in l for l in lines)
    assert (home / ".prefect" / "prefect.db").is_file()  # the empty home was the one used
    # signed out of the box: a development chain made in the empty home on first use, and said to be untrusted
    assert (home / ".aigc" / "dev-keys" / "key.pem").is_file() and f"[sign] made a development signing chain in " \
        f"{home / '.aigc' / 'dev-keys'} (untrusted" in out
    assert re.search(r"credentials\s+C2PA, signed by aigc-pipeline development signer .*UNTRUSTED", out)
    rows = pq.read_table(root / "generated" / f"date={RUN_DATE}", columns=["id", "model_name"])
    assert rows.num_rows == 18 and len(set(rows.column("id").to_pylist())) == 18
    assert (root / "reports" / f"run_date={RUN_DATE}" / "index.html").is_file()
