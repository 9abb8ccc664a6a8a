"""The console of a run: what a person needs on screen, everything else in a log file.

By default a command shows one line per stage as it starts and ends, a progress bar for long stages on a
terminal (a plain line every ``PLAIN_EVERY`` seconds when output is not a terminal), warnings a person must
act on, and the final summary, which names the log file. Everything else (Ray's and Ray Data's logs and
progress tables, Prefect's task logs, worker output, Python warnings, C++ log lines) goes to
``ROOT/logs/<command>-<UTC time>.log``: in a real process the file descriptors 1 and 2 themselves point at
the log file while the run lasts, so even child processes and native libraries write there. ``--verbose``
leaves the terminal as it is and shows everything live.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from jobs.runtime import progress

PLAIN_EVERY = 20.0  # seconds between plain progress lines when output is not a terminal (and only on progress)


class _Line(logging.Handler):
    def __init__(self, console: "Console") -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.console.line(f"WARNING: {text}" if record.levelno >= logging.WARNING and not text.startswith("WARNING") else text)


class Console:
    """``with Console(root, "nightly", verbose) as console:`` around a run; ``console.log_path`` names the file."""

    def __init__(self, root: str, command: str, verbose: bool = False) -> None:
        self.root, self.command, self.verbose = root, command, verbose
        self.out: TextIO = sys.stdout
        self.log_path = ""
        self._file: Any = None
        self._saved: tuple[int, int] | None = None
        self._swapped: tuple[Any, Any] | None = None
        self._bars: dict[str, Any] = {}
        self._handler = _Line(self)

    # ---- setup ------------------------------------------------------------------------------------------------
    def __enter__(self) -> "Console":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = os.path.join(self.root, "logs") if "://" not in self.root else tempfile.mkdtemp(prefix="aigc-logs-")
        os.makedirs(folder, exist_ok=True)
        self.log_path = os.path.join(folder, f"{self.command}-{stamp}-{os.getpid()}.log")
        self._file = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
        if not self.verbose:
            sys.stdout.flush()
            sys.stderr.flush()
            if _real_streams():  # a process of its own: send fd 1 and 2 (children, native code) to the log
                self._saved = (os.dup(1), os.dup(2))
                self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
                os.dup2(self._file.fileno(), 1)
                os.dup2(self._file.fileno(), 2)
            else:  # called in-process under a capture (tests): swap the Python streams only
                self.out = sys.stdout
                self._swapped = (sys.stdout, sys.stderr)
                sys.stdout = sys.stderr = self._file
        progress.LOGGER.addHandler(self._handler)
        progress.LOGGER.setLevel(logging.INFO)
        progress.LOGGER.propagate = False
        progress.attach(self.report)
        return self

    def __exit__(self, *exc: Any) -> None:
        progress.attach(None)
        progress.LOGGER.removeHandler(self._handler)
        for bar in self._bars.values():
            if hasattr(bar, "close"):
                bar.close()
        self._bars.clear()
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved:
            logging.getLogger("prefect").setLevel(logging.WARNING)  # its server's "Stopping ..." at process exit
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self.out.close()
            self._saved = None
        if self._swapped:
            sys.stdout, sys.stderr = self._swapped
            self._swapped = None
        self.out = sys.stdout
        self._file.close()
        if "://" in self.root:  # an object-store ROOT: the log goes there at the end
            from jobs.store.storage import Store

            with open(self.log_path, "rb") as f:
                Store(self.root).write_bytes(f.read(), "logs", os.path.basename(self.log_path))
            self.log_path = Store(self.root).display("logs", os.path.basename(self.log_path))

    # ---- output -----------------------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """A line on the console (and in the log, when the console is not the log)."""
        self.out.write(text + "\n")
        self.out.flush()
        if self._file and not self._file.closed and self.out is not self._file:
            self._file.write(f"[console] {text}\n")

    def report(self, task: str, done: int, total: int, unit: str, now: float | None = None) -> None:
        """A progress count: a tqdm bar on a terminal, else a plain line every ``PLAIN_EVERY`` seconds
        (``now``: the time of the count, default the clock's)."""
        if self.out.isatty():
            from tqdm.auto import tqdm

            bar = self._bars.get(task)
            if bar is None:
                bar = self._bars[task] = tqdm(total=total, desc=f"  {task}", unit=f" {unit}", file=self.out,
                                              dynamic_ncols=True, leave=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
                del self._bars[task]
            return
        now = time.time() if now is None else now
        state = self._bars.setdefault(task, {"first": (now, done), "last": now})  # the first line after PLAIN_EVERY
        if done < total and (now - state["last"] < PLAIN_EVERY or done == state.get("shown", state["first"][1])):
            return
        if done >= total and state.get("finished"):
            return
        state["last"], state["finished"], state["shown"] = now, done >= total, done
        t0, d0 = state["first"]
        rate = (done - d0) / max(now - t0, 1e-9)
        left = f", about {int((total - done) / rate)} s left" if rate > 0 and (total - done) / rate >= 1 else ""
        self.line(f"  {task}: {done:,}/{total:,} {unit} ({done / total:.0%}){f', {rate:.1f} {unit}/s' if rate > 0 else ''}{left}")


def _real_streams() -> bool:
    """Whether stdout and stderr are this process's own file descriptors 1 and 2 (not a test's capture)."""
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False
