"""The console of a run: stages, progress, warnings and the summary on screen; Ray's, Ray Data's and
Prefect's logs (and worker output) in ``ROOT/logs/``, named in the summary; ``--verbose`` shows them live.
The CLI runs as a user runs it, in a process of its own, so its file descriptors are really redirected."""

from __future__ import annotations

import io
import re
from pathlib import Path

from pipelines.console import Console
from tests.cli_process import cli_env, run_aigc
from tests.conftest import TINY_CONFIG

NOISE = ("Execution plan", "streaming_executor", "logging_progress", "Flow run", "Task run")


def _log_of(out: str) -> Path:
    match = re.search(r"^  log\s+(\S+\.log)$", out, re.M)
    assert match, out[-3000:]
    return Path(match.group(1))


def test_the_console_shows_the_run_and_the_log_file_holds_the_rest(tmp_path, prefect_api):
    root = tmp_path / "root"
    code, out, _ = run_aigc("preprocess", "--config", str(TINY_CONFIG), "--out", str(root), "--set", "ray.dashboard=false",
                            log=tmp_path / "console.txt", env=cli_env(prefect_api))
    assert code == 0, out[-3000:]
    assert "[ray] started a local Ray instance: 1 node, 4 CPU" in out and re.search(r"rows read\s+500", out)
    assert not [n for n in NOISE if n in out], out  # none of the libraries' chatter
    assert len(out.splitlines()) < 20
    log = _log_of(out)
    assert log.parent == root / "logs" and log.name.startswith("preprocess-")
    text = log.read_text()
    assert "Execution plan" in text and "Flow run" in text  # Ray Data's and Prefect's logs are all there
    assert "[console] [ray] started a local Ray instance" in text  # and what the console showed, marked


def test_verbose_shows_everything_live(tmp_path, prefect_api):
    code, out, _ = run_aigc("preprocess", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "root"), "--verbose",
                            "--set", "ray.dashboard=false", log=tmp_path / "console.txt", env=cli_env(prefect_api))
    assert code == 0, out[-3000:]
    assert "Execution plan" in out and "Flow run" in out and re.search(r"rows read\s+500", out)


def test_a_failed_run_ends_with_its_reason_and_the_log_on_the_console(tmp_path, prefect_api):
    code, out, _ = run_aigc("train", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "empty"),
                            "--set", "ray.dashboard=false", log=tmp_path / "console.txt", env=cli_env(prefect_api))
    assert code == 1
    assert "aigc: train failed: FileNotFoundError: no curated dataset" in out
    log = re.search(r"aigc: the full log: (\S+\.log)", out)
    assert log and Path(log.group(1)).is_file() and "Traceback" not in out


def test_progress_is_a_plain_line_every_few_seconds_when_output_is_not_a_terminal(tmp_path):
    c = Console(str(tmp_path), "test")
    c.out = io.StringIO()
    for done, now in ((0, 0.0), (10, 1.0), (40, 21.0), (45, 22.0), (45, 50.0), (100, 60.0), (100, 61.0)):
        c.report("generate", done, 100, "rows", now=now)
    lines = c.out.getvalue().splitlines()
    assert lines == ["  generate: 40/100 rows (40%), 1.9 rows/s, about 31 s left",  # none before 20 s
                     "  generate: 45/100 rows (45%), 0.9 rows/s, about 61 s left",  # 28 s later, with progress
                     "  generate: 100/100 rows (100%), 1.7 rows/s"]  # the end, once
