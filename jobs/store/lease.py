"""One night at a time per output ROOT, whoever starts it.

The Prefect deployment already holds one concurrency slot (``schedule.overlap``: a second scheduled run
queues or is cancelled), but a night can also start from the CLI, a backfill or a second deployment. Each
night therefore takes a lease, ``ROOT/_locks/nightly.json``, created atomically (``O_EXCL`` on a local disk),
holding who took it (host, pid, run date, time). A second night finds it and fails at once with who holds
it. A lease whose process is gone (same host, pid not alive) or that is older than ``stale_hours`` is taken
over, so a killed night never blocks the next one.

On an object store there is no exclusive create here: the lease is written, then read back after a short
pause, and the night goes on only if it still holds its own token (the last writer wins; two nights starting
within that pause on different machines are not excluded, which the deployment's concurrency slot covers).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from jobs.store.storage import Store

LOCK = ("_locks", "nightly.json")


class NightLocked(RuntimeError):
    """Another night holds this ROOT's lease."""


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: trust the lease until it goes stale
    try:
        os.kill(int(holder["pid"]), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True


def _stale(holder: dict[str, Any], stale_hours: float) -> bool:
    try:
        taken = datetime.fromisoformat(holder["taken_at"])
    except (KeyError, ValueError):
        return True
    return datetime.now(timezone.utc) - taken > timedelta(hours=stale_hours) or not _alive(holder)


def _create_local(path: str, body: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    return True


@contextmanager
def night_lease(store: Store, run_date: str, stale_hours: float = 12.0) -> Iterator[dict[str, Any]]:
    """Holds ROOT's nightly lease for the block; ``NightLocked`` if another live night holds it."""
    me = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "run_date": run_date,
          "taken_at": datetime.now(timezone.utc).isoformat()}
    body = json.dumps(me, indent=2).encode()
    for _ in range(2):  # at most one take-over of a stale lease
        if store.is_local:
            if _create_local(store.path(*LOCK), body):
                break
        elif not store.exists(*LOCK):
            store.write_bytes(body, *LOCK)
            time.sleep(0.5)
            if store.read_json(*LOCK).get("token") == me["token"]:
                break
        holder = store.read_json(*LOCK) if store.exists(*LOCK) else {}
        if holder and not _stale(holder, stale_hours):
            raise NightLocked(f"another night holds {store.display(*LOCK)}: run date {holder.get('run_date')} on "
                              f"{holder.get('host')} (pid {holder.get('pid')}) since {holder.get('taken_at')}; "
                              "nights never run in parallel on one output root")
        store.delete(*LOCK)  # stale (its process is gone, or too old): take it over
    else:
        raise NightLocked(f"could not take {store.display(*LOCK)}: another night took it at the same moment")
    try:
        yield me
    finally:
        if store.exists(*LOCK) and store.read_json(*LOCK).get("token") == me["token"]:
            store.delete(*LOCK)
