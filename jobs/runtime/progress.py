"""What the jobs tell a person while they run: one-line notes and progress counts, through one channel.

``jobs`` stays free of any console: it calls ``say`` and ``watch``; the CLI (``pipelines.console``) decides
where those go (the terminal, a progress bar, the log file). With nothing attached (a library call, a test),
``say`` prints and ``watch`` does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

LOGGER = logging.getLogger("aigc")
Reporter = Callable[[str, int, int, str], None]  # (task, done, total, unit)
_reporter: Reporter | None = None


def say(message: str, level: int = logging.INFO) -> None:
    """A line a person should see (``level`` WARNING for what they must act on)."""
    if LOGGER.handlers:
        LOGGER.log(level, message)
    else:
        print(message, flush=True)


def attach(reporter: Reporter | None) -> None:
    """Where progress counts go (``None`` detaches)."""
    global _reporter
    _reporter = reporter


@contextlib.contextmanager
def watch(task: str, total: int, unit: str, count: Callable[[], int], every: float = 2.0) -> Iterator[None]:
    """Reports ``count()`` of ``total`` every ``every`` seconds from a thread while the block runs, and once at
    the end. ``count`` reads what the work has written so far (files, checkpoints): the work itself runs
    on Ray and cannot call back. A ``count`` that fails is skipped; nothing here can fail the work."""
    if _reporter is None or total <= 0:
        yield
        return
    reporter, stop = _reporter, threading.Event()

    def poll() -> None:
        while not stop.wait(every):
            try:
                reporter(task, min(int(count()), total), total, unit)
            except Exception:  # a listing racing the writers: try again next time
                continue

    thread = threading.Thread(target=poll, name=f"progress-{task}", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join(timeout=every + 5)
        if ok:
            with contextlib.suppress(Exception):
                reporter(task, min(int(count()), total), total, unit)
