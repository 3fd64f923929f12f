"""A model's state: what its stream says about it, as plain (mutable) Structs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain import events as ev
from domain.policy import RetrainingPolicy


class EventContext(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """What the log adds to an event: where it is, when, and who caused it."""

    position: int
    recorded_at: datetime
    actor: str
    role: str
    stream_version: int = 0


class Decision(msgspec.Struct, gc=False, kw_only=True):
    """An approval or rejection, as recorded, plus whether it was later revoked."""

    approver: str
    decision: str
    comment: str
    policy_version: int
    artifact_sha256: str | None
    library_sha256: str | None
    report_sha256s: list[str]
    expires_at: datetime | None
    recorded_at: datetime
    position: int
    revoked: bool = False
    revoked_reason: str | None = None


class Compiled(msgspec.Struct, gc=False, kw_only=True):
    """The certified native build of a version."""

    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    compiler: str
    flags: list[str]
    compile_seconds: float
    recorded_at: datetime
    max_scaled_diff: float | None = None
    reference: str = ""

    def parity(self) -> float:
        """The measure a parity limit judges (the absolute difference for older events)."""
        return self.max_abs_diff if self.max_scaled_diff is None else self.max_scaled_diff


class Compliance(msgspec.Struct, gc=False, kw_only=True):
    """The latest fairness check of a version."""

    passed: bool
    report_sha256: str
    policy_version: int
    metrics: dict[str, float]
    recorded_at: datetime


class VersionState(msgspec.Struct, gc=False, kw_only=True):
    """Everything recorded about one version."""

    version: int
    artifact_sha256: str
    artifact_size: int
    format: str
    feature_names: list[str]
    metrics: dict[str, float]
    params: dict[str, Any]
    lineage: ev.Lineage
    num_trees: int | None
    registered_at: datetime
    registered_by: str
    requested_by: list[str] = msgspec.field(default_factory=list)
    compiled: Compiled | None = None
    compliance: Compliance | None = None
    decisions: list[Decision] = msgspec.field(default_factory=list)
    retired_at: datetime | None = None
    retired_reason: str | None = None


class Deployment(msgspec.Struct, gc=False, kw_only=True):
    """What serves in one environment, and how it got there."""

    champion: int | None = None
    challenger: int | None = None
    strategy: str = "full"
    traffic_percent: float | None = None
    # the last change: what it did (promotion, demotion, rollback, conclusion) and why
    action: str = ""
    reason: str = ""
    updated_at: datetime | None = None
    updated_by: str | None = None
    position: int = 0
    champion_history: list[int] = msgspec.field(default_factory=list)
    rolled_back: list[int] = msgspec.field(default_factory=list)
    # a bandit experiment's arms (posteriors and traffic shares), from its latest update
    arms: list[ev.BanditArm] = msgspec.field(default_factory=list)
    # the A/B experiment running here, whose hash assigns units with a unit id to arms
    experiment: str | None = None


class DriftAlert(msgspec.Struct, gc=False, kw_only=True):
    """A drift measurement bound to the version that served the window."""

    version: int
    statistic: str
    value: float
    threshold: float
    severity: str
    feature: str | None
    environment: str | None
    recorded_at: datetime
    position: int


class Experiment(msgspec.Struct, gc=False, kw_only=True):
    """An A/B experiment: as started, its latest look, and how it ended."""

    started: ev.ExperimentStarted
    started_at: datetime
    started_by: str
    position: int
    # running, winner, no_difference, guardrail_breach; stopped when its deployment changed
    status: str = "running"
    latest: ev.ExperimentUpdated | None = None
    updates: int = 0
    ended: ev.ExperimentEnded | None = None
    ended_at: datetime | None = None
    # why it stopped without a conclusion (the deployment change that ended its challenger)
    stopped_reason: str | None = None


class RetrainingDecision(msgspec.Struct, gc=False, kw_only=True):
    """What the retraining policy did about one alert: a train job requested, or skipped."""

    # the check that raised the alert (its job id), else the alert: one decision per key
    key: str
    alert_event_id: str
    trigger: str
    alert_version: int
    # triggered or skipped
    outcome: str
    reason: str
    recorded_at: datetime
    position: int
    job_id: str | None = None
    parent_version: int | None = None
    dataset: str | None = None
    dataset_version: int | None = None
    dataset_sha256: str | None = None


class ModelState(msgspec.Struct, gc=False, kw_only=True):
    """A model, its versions, deployments and drift alerts."""

    name: str
    risk_tier: str
    description: str
    owner: str
    tags: list[str]
    sensitive_features: list[str]
    registered_at: datetime
    registered_by: str
    updated_position: int
    # the model stream's version after the last event: an ETag for optimistic clients
    stream_version: int = 0
    versions: dict[int, VersionState] = msgspec.field(default_factory=dict)
    deployments: dict[str, Deployment] = msgspec.field(default_factory=dict)
    drift_alerts: list[DriftAlert] = msgspec.field(default_factory=list)
    experiments: dict[str, Experiment] = msgspec.field(default_factory=dict)
    # the retraining policy in force (None: none set) and where it was set: it applies to
    # alerts recorded after that position
    retraining: RetrainingPolicy | None = None
    retraining_position: int = 0
    retraining_set_by: str | None = None
    retraining_set_at: datetime | None = None
    retrainings: list[RetrainingDecision] = msgspec.field(default_factory=list)

    def next_version(self) -> int:
        """The number the next registered version gets."""
        return max(self.versions, default=0) + 1
