"""Injected faults: armed by two variables, each firing at most its count across processes."""

import os

import pytest

from jobs.runtime import faults


def test_a_fault_fires_once_its_progress_is_reached_and_never_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_FAULT", "train-raise:1:5,generator-kill:2")
    assert faults.plan() is None  # no marker: nothing is armed
    monkeypatch.setenv("AIGC_FAULT_MARKER", str(tmp_path / "m"))
    plan = faults.plan()
    assert faults.driver_pid(plan) == os.getpid() and [f["point"] for f in plan] == ["train-raise", "generator-kill"]
    assert not faults.fire(plan, "train-raise", 4) and faults.fire(plan, "train-raise", 5)
    assert not faults.fire(plan, "train-raise", 9)  # spent
    assert faults.fire(plan, "generator-kill") and faults.fire(plan, "generator-kill") and not faults.fire(plan, "generator-kill")
    assert faults.fired(str(tmp_path / "m")) == 3 and faults.fired(str(tmp_path / "m"), "train-raise") == 1
    monkeypatch.setenv("AIGC_FAULT", "train-explode")
    with pytest.raises(ValueError, match="unknown fault point 'train-explode'"):
        faults.plan()
