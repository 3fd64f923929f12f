"""Commands: what callers ask for, in the imperative. Deciders turn them into events.

Every command names its target (the model, the version), so one handler can read the
target's stream, fold it and decide (`domain.handle`). What a decision needs beyond the
stream (the policy in force, the time) comes in as `Facts`, resolved before deciding.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain import events as ev
from domain.events import JobKind, Lineage, ModelFormat, RiskTier, Severity, Strategy
from domain.policy import Policy, RetrainingPolicy


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision reads besides the stream: the time, the model tier's policy in force."""

    now: datetime
    policy: Policy
    policy_version: int = 0


class RegisterModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    risk_tier: RiskTier
    description: str = ""
    owner: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    sensitive_features: list[str] = msgspec.field(default_factory=list)


class UpdateModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    owner: str | None = None
    tags: list[str] | None = None
    sensitive_features: list[str] | None = None


class RegisterVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A new version; `compile_job_id` names the compile job it requests (ids are inputs)."""

    name: str
    compile_job_id: str
    artifact_sha256: str
    artifact_size: int
    format: ModelFormat
    model_feature_names: list[str]
    num_trees: int | None = None
    feature_names: list[str] | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lineage: Lineage = msgspec.field(default_factory=Lineage)
    compile_params: dict[str, Any] = msgspec.field(default_factory=dict)


class DecideVersion(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    approver: str
    decision: str
    comment: str = ""


class RevokeDecision(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    approver: str
    reason: str


class RetireVersion(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    reason: str


class Promote(msgspec.Struct, frozen=True, kw_only=True):
    """One serving pointer to move (a part of `ChangeDeployments`)."""

    version: int
    environment: str
    strategy: Strategy = "full"
    traffic_percent: float | None = None


class EndChallenger(msgspec.Struct, frozen=True, kw_only=True):
    """Stop the canary, shadow or bandit experiment of an environment (a part of
    `ChangeDeployments`): its challenger takes no more traffic, the champion takes it all."""

    environment: str
    reason: str


DeploymentChange = Promote | EndChallenger


class ChangeDeployments(msgspec.Struct, frozen=True, kw_only=True):
    """Move several serving pointers of a model at once, all or none."""

    name: str
    changes: list[DeploymentChange]


class Rollback(msgspec.Struct, frozen=True, kw_only=True):
    """Undo an environment's last move: end a running experiment, else return to the last
    good champion."""

    name: str
    environment: str
    reason: str


class RaiseDriftAlert(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    statistic: str
    value: float
    threshold: float
    severity: Severity
    feature: str | None = None
    environment: str | None = None


class StartExperiment(msgspec.Struct, frozen=True, kw_only=True):
    """Run an A/B experiment: the challenger serves `traffic_percent` of the units beside the
    champion (a canary promotion, through its gates, unless it already runs so)."""

    name: str
    experiment_id: str
    environment: str
    champion: int
    challenger: int
    traffic_percent: float
    metric: ev.ExperimentMetric
    guardrails: ev.Guardrails = msgspec.field(default_factory=ev.Guardrails)
    minimum_detectable_effect: float
    alpha: float = 0.05
    horizon_per_arm: int | None = None
    min_samples_per_arm: int = 100


class EndBreachingChallenger(msgspec.Struct, frozen=True, kw_only=True):
    """An experiment ended on a guardrail breach: its challenger stops serving (caused by it)."""

    name: str
    ended: ev.ExperimentEnded


class RespondToDrift(msgspec.Struct, frozen=True, kw_only=True):
    """Do what the policy says about a recorded alert (caused by it)."""

    name: str
    alert: ev.DriftDetected


class RespondToPerformance(msgspec.Struct, frozen=True, kw_only=True):
    """Do what the policy says about a recorded performance alert (caused by it)."""

    name: str
    alert: ev.PerformanceAlert


class SetRetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A model's retraining policy, whole (`enabled: false` turns it off)."""

    name: str
    policy: RetrainingPolicy


class DatasetRef(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a named dataset, as resolved when a decision is made."""

    name: str
    dataset_version: int
    sha256: str


class RespondWithRetraining(msgspec.Struct, frozen=True, kw_only=True):
    """Do what the model's retraining policy says about a recorded alert (caused by it).

    `datasets` holds the latest version of each named dataset the policy names, resolved
    just before deciding (absent: the name has no version yet)."""

    name: str
    alert: ev.DriftDetected | ev.PerformanceAlert
    alert_event_id: str
    alert_position: int
    datasets: dict[str, DatasetRef] = msgspec.field(default_factory=dict)


class AddDatasetVersion(msgspec.Struct, frozen=True, kw_only=True):
    """An uploaded file becomes the next version of a named dataset (unless it is the
    latest one already)."""

    name: str
    sha256: str
    rows: int
    columns: list[str]
    format: str
    size: int


class SetPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A tier's whole policy."""

    tier: str
    policy: Policy


class AmendPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Change some fields of a tier's policy (each given field replaced whole); the fields
    not given keep the tier's current values. Decided on the policy in force (`Facts`)."""

    tier: str
    changes: dict[str, Any]


class RequestJob(msgspec.Struct, frozen=True, kw_only=True):
    """Ask for a job on a model (and a version, for the kinds that need one)."""

    name: str
    job_id: str
    kind: JobKind
    version: int | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


# What a job computed, handed back by the worker as plain data; `RecordJobOutcome` decides
# what of it is recorded.


class Compiled(msgspec.Struct, frozen=True, kw_only=True):
    library: ev.VersionCompiled


class ComplianceReported(msgspec.Struct, frozen=True, kw_only=True):
    check: ev.ComplianceChecked
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class DriftReported(msgspec.Struct, frozen=True, kw_only=True):
    check: ev.DriftChecked
    alerts: list[ev.DriftDetected]


class PerformanceReported(msgspec.Struct, frozen=True, kw_only=True):
    check: ev.PerformanceChecked
    alerts: list[ev.PerformanceAlert]


class DataQualityReported(msgspec.Struct, frozen=True, kw_only=True):
    check: ev.DataQualityChecked
    alerts: list[ev.DataQualityAlert]


class BanditReported(msgspec.Struct, frozen=True, kw_only=True):
    update: ev.BanditUpdated
    conclusion: ev.ExperimentConcluded | None = None


class Trained(msgspec.Struct, frozen=True, kw_only=True):
    version: RegisterVersion


class ExperimentReported(msgspec.Struct, frozen=True, kw_only=True):
    update: ev.ExperimentUpdated
    ended: ev.ExperimentEnded | None = None


JobOutcome = (
    Compiled
    | ComplianceReported
    | DriftReported
    | PerformanceReported
    | DataQualityReported
    | BanditReported
    | Trained
    | ExperimentReported
)


class StartAttempt(msgspec.Struct, frozen=True, kw_only=True):
    job: ev.JobRequested
    attempt: int
    worker: str


class FailAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """An attempt failed; `final` when no retry follows."""

    job: ev.JobRequested
    attempt: int
    error: str
    final: bool
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class RecordJobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    job: ev.JobRequested
    attempt: int
    seconds: float
    outcome: JobOutcome


ModelCommand = (
    RegisterModel
    | UpdateModel
    | RegisterVersion
    | DecideVersion
    | RevokeDecision
    | RetireVersion
    | ChangeDeployments
    | Rollback
    | RaiseDriftAlert
    | RespondToDrift
    | RespondToPerformance
    | SetRetrainingPolicy
    | RespondWithRetraining
    | StartExperiment
    | EndBreachingChallenger
    | RequestJob
    | StartAttempt
    | FailAttempt
    | RecordJobOutcome
)
Command = ModelCommand | SetPolicy | AmendPolicy | AddDatasetVersion
