"""Starting or joining Ray, once per process."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Joins ``address`` (or ``RAY_ADDRESS``) when given, else starts a local instance.

    ``num_cpus`` is the number of logical CPU slots for a local instance. Ray Train workers hold their
    slots for the whole run, so a local instance needs more slots than workers or Ray Data's tasks that
    feed them cannot schedule; the default is ``max(4, os.cpu_count())``.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or max(4, os.cpu_count() or 1), logging_level=logging.WARNING,
                 include_dashboard=None)
