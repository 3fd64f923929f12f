"""The job kinds: each gathers its inputs, computes in the process pool, and returns the
decider of its outcome (see workers/runner.py)."""

from __future__ import annotations

from workers.jobs import compile as compile_job
from workers.runner import FollowUp, Kind

KINDS: dict[str, Kind] = {
    "compile": compile_job.run,
}
FOLLOW_UPS: dict[str, FollowUp] = {}
