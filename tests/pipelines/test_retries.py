"""Stage retries (real Prefect): transient failures are retried, bad input fails once with its message."""

import pytest
from prefect import flow, task

from pipelines.tasks import RETRIES

calls = {"transient": 0, "bad": 0}


@task(**{**RETRIES, "retry_delay_seconds": 0})
def flaky():
    calls["transient"] += 1
    if calls["transient"] < 3:
        raise ConnectionError("bucket hiccup")
    return "ok"


@task(**{**RETRIES, "retry_delay_seconds": 0})
def bad_input():
    calls["bad"] += 1
    raise FileNotFoundError("image_folder source: /nope is not a directory")


@flow
def run_flaky():
    return flaky()


@flow
def run_bad():
    return bad_input()


def test_transient_errors_are_retried_and_bad_input_is_not(prefect_server):
    assert run_flaky() == "ok" and calls["transient"] == 3
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        run_bad()
    assert calls["bad"] == 1
