"""What one night did, as typed records: the nightly flow fills a ``NightResult`` stage by stage, the CLI's summary
reads it, and ``to_dict`` is what the report (``report.json``) and Prefect's artifacts keep.

Any part may be missing on a failed night (it stopped before that stage); ``status`` says how it ended:
``published``, ``refused`` (the gate said no, or the budget's estimate did: nothing published), ``stopped`` (it ran
over its budget: nothing published, its staging kept) or ``failed`` (an error: ``reason``).
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
from jobs.runtime.usage import NightOverBudget, UsageMeter, between
from jobs.train.run import TrainResult


@dataclasses.dataclass
class Stage:
    """One stage's timing and cost (also when it failed: ``note`` says how). The cost is what Ray had reserved
    while the stage ran (``jobs.runtime.usage``): CPU- and GPU-seconds, per node, and the object store's peak."""

    stage: str
    seconds: Optional[float] = None
    rows: Optional[int] = None
    rows_per_second: Optional[float] = None
    note: Optional[str] = None
    cpu_seconds: Optional[float] = None
    gpu_seconds: Optional[float] = None
    rows_per_cpu_second: Optional[float] = None
    rows_per_gpu_second: Optional[float] = None
    object_store_peak_bytes: Optional[int] = None
    nodes: Optional[dict[str, dict[str, float]]] = None

    def cost(self, usage: dict[str, Any]) -> None:
        self.cpu_seconds, self.gpu_seconds = usage["cpu_seconds"], usage["gpu_seconds"]
        self.object_store_peak_bytes, self.nodes = usage["object_store_peak_bytes"], usage["nodes"]
        if self.rows:
            self.rows_per_cpu_second = round(self.rows / self.cpu_seconds, 3) if self.cpu_seconds else None
            self.rows_per_gpu_second = round(self.rows / self.gpu_seconds, 3) if self.gpu_seconds else None


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
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)  # budget, estimate, total, stopped (``budget_cost``)
    meter: Optional[UsageMeter] = dataclasses.field(default=None, repr=False, compare=False)  # the night's sampler
    current: str = "the night's start"  # the stage running now (a budget stop names it)

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
                "augmentation_lift": self.augmentation_lift, "report": self.report, "cost": self.cost}

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Times and costs a stage into ``stages`` (also when it fails) and tells the console when it starts and
        ends. A night over its budget stops here at the latest (the meter interrupts a waiting stage sooner)."""
        self.over_budget()
        entry, started, self.current = Stage(name), time.time(), f"stage {name}"
        before = self.meter.reading() if self.meter else None
        progress.say(f"{name} ...")
        try:
            yield entry
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and self.meter and self.meter.stopped_because:
                exc = NightOverBudget(self.meter.stopped_because)  # Ray re-raises the budget's stop as a plain one
            entry.note = f"failed: {type(exc).__name__}: {exc}"[:300]
            if isinstance(exc, NightOverBudget):
                raise exc from None
            raise
        finally:
            entry.seconds = round(time.time() - started, 2)
            if entry.rows is not None and entry.seconds:
                entry.rows_per_second = round(entry.rows / entry.seconds, 2)
            if before is not None:
                entry.cost(between(before, self.meter.reading(), self.meter.peak_since(before.at)))
            self.stages.append(entry)
            rows = f", {entry.rows:,} rows" if entry.rows else ""
            failed = (entry.note or "").startswith("failed")
            progress.say(f"{name} {'failed' if failed else 'done'} in {entry.seconds:.1f} s{rows}")
            self.current = f"the step after stage {name}"

    def over_budget(self) -> None:
        """Raises ``NightOverBudget`` when the meter has found the night over its budget."""
        if self.meter is not None and self.meter.stopped_because and not self.meter.shielded:
            raise NightOverBudget(self.meter.stopped_because)
