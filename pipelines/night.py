"""What one night did, as typed records: the nightly flow fills a ``NightResult`` stage by stage, the CLI's summary
reads it, and ``to_dict`` is what the report (``report.json``) and Prefect's artifacts keep.

Any part may be missing on a failed night (it stopped before that stage); ``status`` says how it ended:
``published``, ``refused`` (the gate said no: nothing published) or ``failed`` (an error: ``reason``).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

from jobs.data.curate import PreprocessResult
from jobs.gate.policy import Promotion
from jobs.generate.manifest import GenerateResult
from jobs.runtime import progress
from jobs.train.run import TrainResult


@dataclasses.dataclass
class Stage:
    """One stage's timing (also when it failed: ``note`` says how)."""

    stage: str
    seconds: Optional[float] = None
    rows: Optional[int] = None
    rows_per_second: Optional[float] = None
    note: Optional[str] = None


@dataclasses.dataclass
class ModelTonight:
    """What the night did with one model: reused production, or trained a candidate and gated it."""

    name: str
    family: str
    modality: str
    decision: str  # why it was trained, or why production is up to date
    version: Optional[str] = None  # production after tonight: what generated tonight's rows
    trained: Optional[TrainResult] = None
    promotion: Optional[Promotion] = None

    @property
    def candidate(self) -> Optional[str]:
        return self.trained.model.version if self.trained else None

    @property
    def promoted(self) -> bool:
        return bool(self.promotion and self.promotion.promoted)

    def to_dict(self) -> dict[str, Any]:
        p, t = self.promotion, self.trained
        return {"name": self.name, "family": self.family, "modality": self.modality, "decision": self.decision,
                "version": self.version, "trained": t is not None, "candidate": self.candidate, "promoted": self.promoted,
                "evaluation": p.evaluation if p else None, "promotion_failures": p.failures if p else [],
                "promotion_checks": p.checks if p else [],
                "train": None if t is None else {
                    "model": {"name": t.model.name, "version": t.model.version, "path": t.model.path}, "steps": t.steps,
                    "epochs": t.epochs, "seconds": t.seconds, "samples_per_second": t.samples_per_second,
                    "used_as_is": t.used_as_is, "final_metrics": t.final_metrics, "promoted": t.promoted}}


@dataclasses.dataclass
class NightResult:
    name: str
    run_date: str
    started_at: str = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    status: str = "failed"
    reason: Optional[str] = None
    stages: list[Stage] = dataclasses.field(default_factory=list)
    preprocess: Optional[PreprocessResult] = None
    models: list[ModelTonight] = dataclasses.field(default_factory=list)
    generate: Optional[GenerateResult] = None
    gate: Optional[dict[str, Any]] = None  # the gate's verdict (``GateVerdict.as_dict``), or a reused night's
    report: Optional[str] = None
    seconds: Optional[float] = None

    @property
    def augmentation_lift(self) -> Optional[dict[str, Any]]:
        return (self.gate or {}).get("augmentation_lift") or None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the report and its later trends read (``generate`` is the night's manifest)."""
        return {"name": self.name, "run_date": self.run_date, "started_at": self.started_at, "status": self.status,
                "reason": self.reason, "seconds": self.seconds, "stages": [dataclasses.asdict(s) for s in self.stages],
                "preprocess": dataclasses.asdict(self.preprocess) if self.preprocess else None,
                "models": [m.to_dict() for m in self.models],
                "generate": self.generate.manifest if self.generate else None, "gate": self.gate,
                "augmentation_lift": self.augmentation_lift, "report": self.report}

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Times a stage into ``stages`` (also when it fails) and tells the console when it starts and ends."""
        entry, started = Stage(name), time.time()
        progress.say(f"{name} ...")
        try:
            yield entry
        except BaseException as exc:
            entry.note = f"failed: {type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            entry.seconds = round(time.time() - started, 2)
            if entry.rows is not None and entry.seconds:
                entry.rows_per_second = round(entry.rows / entry.seconds, 2)
            self.stages.append(entry)
            rows = f", {entry.rows:,} rows" if entry.rows else ""
            failed = (entry.note or "").startswith("failed")
            progress.say(f"{name} {'failed' if failed else 'done'} in {entry.seconds:.1f} s{rows}")
