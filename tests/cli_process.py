"""``aigc`` as a user runs it: a subprocess of the installed command, with the environment a test chooses.

The suite's own Ray and Prefect stay out of it: ``RAY_ADDRESS`` and ``PREFECT_API_URL`` are dropped unless
the test hands them back (``prefect_api``: the session's Prefect server, for tests that are not about
Prefect's start; a night then skips starting a temporary server, about 15 s here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = "import sys; from pipelines.cli import main; sys.exit(main())"


def cli_env(prefect_api: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "RAY_ADDRESS"))}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    env.update(extra)
    return env


def run_aigc(*args: str, log: Path, env: dict[str, str] | None = None, timeout: float = 600) -> tuple[int, str, float]:
    """Runs ``aigc ARGS``; returns (exit code, everything it printed, seconds). The output is kept in ``log``."""
    script = Path(sys.executable).with_name("aigc")
    command = [str(script)] if script.is_file() else [sys.executable, "-c", CLI]
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.run([*command, *args], cwd=REPO, env=cli_env() if env is None else env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, log.read_text(), time.time() - started
