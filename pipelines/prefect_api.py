"""The Prefect API a CLI run talks to: the team's server (``PREFECT_API_URL``), or Prefect's temporary local
server, started here with a wait a person can follow.

Prefect waits 20 s for its temporary server by default. On the first start on a machine the server creates
and migrates its SQLite database (``PREFECT_HOME/prefect.db``), which on a busy 2-core machine takes longer,
and a first ``make demo`` failed with "Timed out while attempting to connect to ephemeral Prefect API
server". Here the wait is as long as ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (default
``STARTUP_TIMEOUT_S``), the console says what it is waiting for, and the wait ends as soon as the server
process dies, with its exit code, instead of running out the clock.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

STARTUP_TIMEOUT_S = 900
NOTE_EVERY_S = 15


class PrefectUnavailable(RuntimeError):
    """Prefect's temporary server did not start; the message says how it ended."""


def start_prefect_api(say: Callable[[str], None] = print) -> Callable[[], None]:
    """Starts Prefect's temporary server in the background when no API is configured; returns ``wait()``,
    which blocks until it answers (or raises ``PrefectUnavailable``). Call early, do other start-up work
    (Ray) meanwhile, then ``wait()`` before the first flow."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # Prefect's own client finds this instance already running
    if server.running:
        return lambda: None
    database = _sqlite_file(str(settings.server.database.connection_url.get_secret_value()
                                if settings.server.database.connection_url else ""), Path(settings.home))
    first = database is not None and not database.exists()
    say("[prefect] starting Prefect's temporary local server" + (
        f" (first start on this machine: it creates its database {database}; a minute or more on 2 cores)" if first else ""))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # handed to wait()
            errors.append(exc)

    thread = threading.Thread(target=run, name="prefect-server-start", daemon=True)
    started = time.time()
    thread.start()

    def wait() -> None:
        next_note = NOTE_EVERY_S
        while thread.is_alive():
            thread.join(0.5)
            proc = server.server_process
            code = proc.poll() if proc is not None else None
            if code is not None and code != 3:  # 3: its port was taken; Prefect retries on another port
                raise PrefectUnavailable(f"Prefect's temporary server exited with code {code} while starting "
                                         "(its output is above); set PREFECT_API_URL to use a running server instead")
            if time.time() - started > next_note:
                say(f"[prefect] still waiting for the temporary server to answer ({time.time() - started:.0f} s"
                    + (", creating its database" if first else "") + ")")
                next_note += NOTE_EVERY_S
        if errors:
            raise PrefectUnavailable(f"Prefect's temporary server did not start: {errors[0]}") from errors[0]
        say(f"[prefect] temporary server ready at {server.address} after {time.time() - started:.0f} s")

    return wait


def _sqlite_file(url: str, home: Path) -> Path | None:
    """The database file of a SQLite connection URL (Prefect's default: ``PREFECT_HOME/prefect.db``)."""
    if not url:
        return home / "prefect.db"
    if url.startswith("sqlite") and ":///" in url:
        return Path(url.split(":///", 1)[1]).expanduser()
    return None
