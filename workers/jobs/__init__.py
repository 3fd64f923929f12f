"""The job kinds: each gathers its inputs, computes in the process pool, and returns the
decider of its outcome (see workers/runner.py)."""

from __future__ import annotations

from workers.jobs import bandit, compliance, drift, experiment, performance, quality, train
from workers.jobs import compile as compile_job
from workers.runner import FollowUp, Kind

KINDS: dict[str, Kind] = {
    "compile": compile_job.run,
    "train": train.run,
    "compliance": compliance.run,
    "drift": drift.run,
    "bandit": bandit.run,
    "performance": performance.run,
    "data_quality": quality.run,
    "experiment": experiment.run,
}
FOLLOW_UPS: dict[str, FollowUp] = {
    "drift": drift.respond,
    "performance": performance.respond,
    "experiment": experiment.respond,
}
