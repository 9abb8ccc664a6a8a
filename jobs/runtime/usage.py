"""What a night costs: CPU- and GPU-seconds reserved on the cluster, per node, and the object store's peak,
sampled from what Ray has scheduled; and the budget that stops a night that runs over.

Ray knows, per node, its total and available resources (GCS resource reports, updated as tasks, actors and
placement groups take and release them). A ``UsageMeter`` thread samples them every ``interval`` seconds and
integrates *reserved* resources (total - available) over time: that is what a cluster bills, whether the work
used its CPUs fully or waited. It also keeps the object store's peak (its used bytes are total - available
``object_store_memory``). Stages read the meter at their start and end (``Usage.between``).

Work outside Ray (the driver's own pandas, Prefect) is not in these figures; the stage's wall time is. On a shared
cluster the figures include other jobs' reservations; the night's manifest says which nodes were seen.
"""

from __future__ import annotations

import _thread
import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

BUDGET_SIGNAL = signal.SIGUSR2  # never sent by the OS here: ``_thread.interrupt_main`` raises its handler in the main thread


class NightOverBudget(KeyboardInterrupt):
    """The night ran past its budget and was stopped. A ``KeyboardInterrupt``: Ray's blocking waits turn only that
    into a clean interruption (they may re-raise it as a plain ``KeyboardInterrupt``: ``UsageMeter.stopped_because``
    says whether the budget stopped it), Prefect marks the running task crashed and never retries it, and no
    ``except Exception`` swallows it."""


@dataclasses.dataclass
class Reading:
    """Totals at one moment of a meter's life (monotonic, so two readings subtract)."""

    at: float  # time.time()
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    nodes: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # node id -> {cpu_seconds, gpu_seconds}
    object_store_peak: int = 0  # bytes, highest sample on one node so far


def between(start: Reading, end: Reading, peak: int | None = None) -> dict[str, Any]:
    """What was used from ``start`` to ``end``: wall seconds, CPU- and GPU-seconds reserved (all nodes and per node),
    and the object store's peak (``peak``: the highest sample inside the interval, when known)."""
    nodes = {}
    for node, used in end.nodes.items():
        before = start.nodes.get(node, {})
        d = {k: round(v - before.get(k, 0.0), 3) for k, v in used.items()}
        if any(d.values()):
            nodes[node[:12]] = d
    return {"wall_seconds": round(end.at - start.at, 3), "cpu_seconds": round(end.cpu_seconds - start.cpu_seconds, 3),
            "gpu_seconds": round(end.gpu_seconds - start.gpu_seconds, 3), "nodes": nodes,
            "object_store_peak_bytes": end.object_store_peak if peak is None else peak}


class UsageMeter:
    """Samples the cluster's reserved resources on a thread of its own; ``check`` is called with the running
    totals after every sample (the budget's hook: it returns a reason to stop, or None)."""

    def __init__(self, interval: float = 0.5, check: Callable[[Reading], str | None] | None = None) -> None:
        self.interval, self.check = interval, check
        self.total = Reading(time.time())
        self.stopped_because: str | None = None
        self.unavailable: str | None = None  # why the last sample failed (a Ray Client connection, say)
        self.samples = 0  # samples taken: none means the figures are not Ray's (``unavailable`` says why)
        self._lock, self._done = threading.RLock(), threading.Event()  # RLock: the signal handler may run inside a reading
        self._last: tuple[float, dict[str, dict[str, float]]] | None = None
        self._peaks: list[tuple[float, int]] = []  # (time, bytes) of each sample, for a stage's own peak
        self._thread = threading.Thread(target=self._run, name="usage-meter", daemon=True)
        self._interrupt = self._shielded = False
        self.started = self.total.at

    def start(self, interrupt_main: bool = True) -> "UsageMeter":
        """Starts sampling. With ``interrupt_main`` (and when called from the main thread) a budget stop raises
        ``NightOverBudget`` in the main thread wherever it waits (Ray's waits check for signals)."""
        if interrupt_main and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(BUDGET_SIGNAL, self._raise)
            self._interrupt = True
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> Reading:
        self._done.set()
        self._thread.join(timeout=5)
        self._sample()
        if self._interrupt:
            signal.signal(BUDGET_SIGNAL, self._previous)
            self._interrupt = False
        return self.reading()

    def shield(self) -> None:
        """From now on the budget interrupts nothing (a night that passed its gate publishes whole); what it
        finds is still recorded in ``stopped_because``."""
        with self._lock:
            self._shielded = True

    @property
    def shielded(self) -> bool:
        with self._lock:
            return self._shielded

    def reading(self) -> Reading:
        with self._lock:
            t = self.total
            return Reading(time.time(), t.cpu_seconds, t.gpu_seconds, {k: dict(v) for k, v in t.nodes.items()},
                           t.object_store_peak)

    def peak_since(self, since: float) -> int:
        """The object store's highest sample (bytes, one node) since ``since``."""
        with self._lock:
            return max((b for t, b in self._peaks if t >= since), default=0)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()
            if self.check is not None and self.stopped_because is None:
                why = self.check(self.reading())
                if why:
                    with self._lock:
                        self.stopped_because = why
                        if self._interrupt and not self._shielded:
                            _thread.interrupt_main(BUDGET_SIGNAL)

    def _raise(self, signum: int, frame: Any) -> None:
        with self._lock:
            if self._shielded:
                return
        raise NightOverBudget(self.stopped_because or "over budget")

    def _sample(self) -> None:
        try:
            used = reserved_per_node()
        except Exception as exc:  # not connected, or a Ray Client connection: nothing to sample
            self.unavailable = f"{type(exc).__name__}: {exc}"
            used = None
        now = time.time()
        with self._lock:
            if used is not None and self._last is not None:
                then, before = self._last
                dt = now - then
                for node, res in before.items():  # the reservation held since the last sample (left Riemann sum)
                    acc = self.total.nodes.setdefault(node, {"cpu_seconds": 0.0, "gpu_seconds": 0.0})
                    acc["cpu_seconds"] += res["CPU"] * dt
                    acc["gpu_seconds"] += res["GPU"] * dt
                    self.total.cpu_seconds += res["CPU"] * dt
                    self.total.gpu_seconds += res["GPU"] * dt
            if used is not None:
                self.samples += 1
                self._last = (now, used)
                peak = max((r["object_store"] for r in used.values()), default=0)
                self._peaks.append((now, int(peak)))
                self.total.object_store_peak = max(self.total.object_store_peak, int(peak))
            self.total.at = now


def reserved_per_node() -> dict[str, dict[str, float]]:
    """Node id -> {CPU, GPU, object_store (bytes)} reserved now, from Ray's per-node totals and availability."""
    from ray._private import state

    total, available = state.total_resources_per_node(), state.available_resources_per_node()
    out = {}
    for node, res in total.items():
        free = available.get(node, res)
        out[node] = {"CPU": max(res.get("CPU", 0.0) - free.get("CPU", 0.0), 0.0),
                     "GPU": max(res.get("GPU", 0.0) - free.get("GPU", 0.0), 0.0),
                     "object_store": max(res.get("object_store_memory", 0.0) - free.get("object_store_memory", 0.0), 0.0)}
    return out
