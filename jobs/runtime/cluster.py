"""Starting or joining Ray, once per process.

A local instance listens on the loopback address only, unless ``ray.listen: network`` asks otherwise.
Ray binds every server (GCS, raylets, workers, agents) to its node IP, and on Linux it takes the node IP
from the machine's route to the outside, so a plain ``ray.init()`` on a laptop or a shared box is reachable
from the LAN. Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, its default on macOS and
Windows) uses ``127.0.0.1`` instead; ``ensure_ray`` turns it on for the local instance it starts. Token
authentication (``RAY_AUTH_MODE=token``, Ray's default for a local instance since 2.59) stays as the
environment sets it; see ``deploy/README.md`` for shared clusters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Literal

import ray

from jobs.runtime import capacity, progress

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_dashboard_url: str | None = None


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               listen: Literal["localhost", "network"] = "localhost", dashboard: bool = True,
               autoscaling: bool = False) -> None:
    """Joins ``address`` (or ``RAY_ADDRESS``) when given, else starts a local instance.

    ``num_cpus`` is the number of logical CPU slots for a local instance. Ray Train workers hold their
    slots for the whole run, so a local instance needs more slots than workers or Ray Data's tasks that
    feed them cannot schedule; the default is ``max(4, os.cpu_count())``. ``listen`` decides whether the
    local instance's sockets are on ``127.0.0.1`` (``localhost``) or on the machine's address (``network``:
    other machines can then join it or reach its dashboard agent, so keep token authentication on).
    ``dashboard`` starts a local instance's dashboard (its head and a dozen module processes poll the
    cluster all the time; the test suite turns it off). ``autoscaling``: the cluster adds nodes on demand,
    so stages do not check their demands against the nodes up now (``jobs.runtime.capacity``).

    With no address, a new local instance starts even when ``ray start`` runs on this machine (a plain
    ``ray.init()`` would join it, or a dead cluster its ``ray_current_cluster`` file still names, and then
    refuse ``num_cpus``); ``auto`` or an address joins a running cluster instead.
    """
    global _dashboard_url
    capacity.set_autoscaling(autoscaling)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    if address:
        try:
            context = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except ConnectionError as exc:  # 'auto' with nothing running, or an address nobody answers on
            raise RayUnavailable(f"ray.address: cannot join the Ray cluster at {address!r}: {exc}") from None
        gcs = context.address_info.get("gcs_address") or address
        where = f"joined the Ray cluster at {gcs}" + (f" ({address})" if address != gcs else "")
    else:
        # "local": a new instance even when `ray start` runs on this machine (or left its
        # ray_current_cluster file behind), which a plain ray.init() would try to join, and then refuse
        # num_cpus. Joining a running cluster is what ray.address / RAY_ADDRESS / --ray-address are for.
        with _single_machine_mode() if listen == "localhost" else contextlib.nullcontext():
            context = ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1),
                               logging_level=logging.WARNING, include_dashboard=None if dashboard else False)
        where = "started a local Ray instance"
    _dashboard_url = getattr(context, "dashboard_url", None) or None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
    progress.say(f"[ray] {where}: {len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus:g} CPU, {gpus:g} GPU"
                 + (f"; dashboard {dashboard_url()}" if _dashboard_url else ""))


class RayUnavailable(RuntimeError):
    """The configured Ray cluster cannot be joined; the message names ``ray.address``."""


def dashboard_url() -> str | None:
    """``http://host:port`` of the dashboard of the Ray this process started or joined (None without one)."""
    if not _dashboard_url:
        return None
    return _dashboard_url if "://" in _dashboard_url else f"http://{_dashboard_url}"


class _single_machine_mode:
    """Ray's single-machine mode while a local instance starts: its processes (GCS, raylet, agents, and the
    workers the raylet spawns later) inherit the variable; this process reads Ray's constant, which Ray
    evaluated when it was imported, so that is set too. Both are put back afterwards: the instance keeps
    the loopback address it started with, and a later ``ray.init(address=...)`` in this process is not
    confined to it."""

    def __enter__(self) -> None:
        from ray._private import ray_constants  # no public switch: see the module docstring

        self.constants, self.saved_env = ray_constants, os.environ.get(SINGLE_MACHINE)
        self.saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        os.environ[SINGLE_MACHINE] = "0"
        if self.saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = False

    def __exit__(self, *exc: object) -> None:
        if self.saved_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = self.saved_env
        if self.saved is not None:
            self.constants.ENABLE_RAY_CLUSTER = self.saved
