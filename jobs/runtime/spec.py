"""The base of every config section (unknown keys are errors) and the ``ray`` section: which Ray to start or join."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class RaySpec(Strict):
    address: Optional[str] = None  # None: RAY_ADDRESS or a new local instance
    num_cpus: Optional[int] = Field(None, ge=1)  # logical CPU slots of a local instance
    listen: Literal["localhost", "network"] = "localhost"  # a local instance's sockets: 127.0.0.1 only, or the
    #   machine's address (other machines can reach it: keep RAY_AUTH_MODE=token); see jobs/runtime/cluster.py
    dashboard: bool = True  # a local instance's dashboard (about 5% of a 2-core machine while it runs)
    autoscaling: bool = False  # the cluster adds nodes on demand (KubeRay, `ray up`): stages skip the check of their
    #   actors and workers against the nodes up now (jobs/capacity.py) and rely on their start timeouts instead


class BudgetSpec(Strict):
    """What one night may cost (``jobs.runtime.budget``): checked against an estimate before the night starts (the
    night is refused, naming the estimate and the limit) and while it runs (the night stops, publishes nothing,
    and keeps its staging: a re-run with a larger budget resumes). A limit left null is not checked."""

    cpu_hours: Optional[float] = Field(None, gt=0)  # CPU-hours reserved on the cluster (what Ray scheduled)
    gpu_hours: Optional[float] = Field(None, gt=0)  # GPU-hours reserved
    wall_minutes: Optional[float] = Field(None, gt=0)  # wall time of the night, start to publish
    history_nights: int = Field(3, ge=1, le=30)  # the estimate: the costliest of the last N nights under ROOT
