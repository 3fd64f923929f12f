"""Every event the ledger records: frozen, tagged msgspec Structs. Tags never change.

Stored shapes evolve only additively: a new field gets a default, so every event ever
written still decodes (see the golden file in tests/domain).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from domain.policy import GateResult, Policy, RetrainingPolicy

Role = Literal["admin", "ci", "approver", "auditor", "scorer"]
ROLES: tuple[Role, ...] = ("admin", "ci", "approver", "auditor", "scorer")
RiskTier = Literal["low", "medium", "high"]
Strategy = Literal["full", "canary", "shadow", "bandit"]
Severity = Literal["info", "warning", "critical"]
ModelFormat = Literal["lightgbm", "xgboost-json", "sklearn-skops"]
# demotion: a challenger ended (by a caller or by policy); conclusion: a bandit experiment
# settled on its winner
DeploymentAction = Literal["promotion", "rollback", "demotion", "conclusion"]
JobKind = Literal[
    "train", "compile", "compliance", "drift", "bandit", "performance", "data_quality", "experiment"
]
MetricKind = Literal["binary", "continuous"]
# increase: a higher mean is better (conversion); decrease: lower is (default, loss)
Direction = Literal["increase", "decrease"]
# winner: significant at alpha; no_difference: the horizon came first; guardrail_breach: the
# challenger broke a guardrail and was ended
ExperimentOutcome = Literal["winner", "no_difference", "guardrail_breach"]


class Event(msgspec.Struct, gc=False, frozen=True, kw_only=True, tag_field="type"):
    """Base of all events; the tag is the stored `type` column."""


class TokenIssued(Event, frozen=True, kw_only=True, tag="token.issued"):
    """An API token was issued. Only its sha256 is recorded, never the token."""

    token_id: str
    subject: str
    role: Role
    token_sha256: str


class TokenRevoked(Event, frozen=True, kw_only=True, tag="token.revoked"):
    """An API token stops authenticating."""

    token_id: str
    reason: str = ""


class PolicySet(Event, frozen=True, kw_only=True, tag="policy.set"):
    """The governance policy of a risk tier changed; its version is the stream version."""

    risk_tier: RiskTier
    policy: Policy


class ModelRegistered(Event, frozen=True, kw_only=True, tag="model.registered"):
    """A model name was registered with its risk tier."""

    name: str
    risk_tier: RiskTier
    description: str = ""
    owner: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    sensitive_features: list[str] = msgspec.field(default_factory=list)


class ModelUpdated(Event, frozen=True, kw_only=True, tag="model.updated"):
    """Descriptive fields of a model changed (None: unchanged)."""

    name: str
    description: str | None = None
    owner: str | None = None
    tags: list[str] | None = None
    sensitive_features: list[str] | None = None


class Lineage(msgspec.Struct, gc=False, frozen=True, kw_only=True, omit_defaults=True):
    """Where a version came from."""

    git_commit: str | None = None
    ci_run_url: str | None = None
    dataset_sha256: str | None = None
    training_job: str | None = None
    target: str | None = None
    # the training reference of each feature (quantiles, category frequencies) for drift
    profile_sha256: str | None = None
    # a retrained version: the alert (event id) that triggered it, the version whose
    # parameters it was trained with, and the named dataset's version it was trained on
    triggered_by: str | None = None
    parent_version: int | None = None
    dataset: str | None = None
    dataset_version: int | None = None


class VersionRegistered(Event, frozen=True, kw_only=True, tag="version.registered"):
    """An immutable model version: its artifact, schema, metrics and lineage."""

    name: str
    version: int
    artifact_sha256: str
    artifact_size: int
    format: ModelFormat
    feature_names: list[str]
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lineage: Lineage = msgspec.field(default_factory=Lineage)
    num_trees: int | None = None


class JobRequested(Event, frozen=True, kw_only=True, tag="job.requested"):
    """A background job was asked for; the dispatcher relays it to the workers."""

    job_id: str
    kind: JobKind
    name: str
    version: int | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class VersionCompiled(Event, frozen=True, kw_only=True, tag="version.compiled"):
    """A native scorer was built and its parity with the artifact certified."""

    name: str
    version: int
    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    compiler: str = ""
    flags: list[str] = msgspec.field(default_factory=list)
    compile_seconds: float = 0.0
    job_id: str | None = None
    # max_abs_diff / max(1, max |reference score|) (None: recorded before it was measured;
    # max_abs_diff is then the measure), and what computed the reference
    max_scaled_diff: float | None = None
    reference: str = ""


class ComplianceChecked(Event, frozen=True, kw_only=True, tag="compliance.checked"):
    """Fairness metrics by sensitive group were checked against the policy."""

    name: str
    version: int
    passed: bool
    report_sha256: str
    policy_version: int
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    job_id: str | None = None


class VersionApproved(Event, frozen=True, kw_only=True, tag="version.approved"):
    """An approver approved a version, bound to the exact digests they saw."""

    name: str
    version: int
    approver: str
    comment: str = ""
    policy_version: int
    artifact_sha256: str
    library_sha256: str | None
    report_sha256s: list[str] = msgspec.field(default_factory=list)
    expires_at: datetime


class VersionRejected(Event, frozen=True, kw_only=True, tag="version.rejected"):
    """An approver rejected a version."""

    name: str
    version: int
    approver: str
    comment: str = ""
    policy_version: int


class ApprovalRevoked(Event, frozen=True, kw_only=True, tag="approval.revoked"):
    """An approver withdrew their decision on a version."""

    name: str
    version: int
    approver: str
    reason: str = ""


class DeploymentChanged(Event, frozen=True, kw_only=True, tag="deployment.changed"):
    """The serving pointers of one environment changed, with the gates that allowed it."""

    name: str
    environment: str
    action: DeploymentAction
    version: int
    champion: int | None
    challenger: int | None = None
    strategy: Strategy = "full"
    traffic_percent: float | None = None
    reason: str = ""
    policy_version: int = 0
    gates: list[GateResult] = msgspec.field(default_factory=list)


class VersionRetired(Event, frozen=True, kw_only=True, tag="version.retired"):
    """A version may no longer be deployed."""

    name: str
    version: int
    reason: str


class DriftDetected(Event, frozen=True, kw_only=True, tag="drift.detected"):
    """Drift was measured on the inputs a version served."""

    name: str
    version: int
    statistic: str
    value: float
    threshold: float
    severity: Severity
    feature: str | None = None
    environment: str | None = None
    job_id: str | None = None
    report_sha256: str | None = None


class JobStarted(Event, frozen=True, kw_only=True, tag="job.started"):
    """A worker began one attempt at a job."""

    job_id: str
    kind: JobKind
    name: str
    attempt: int
    worker: str = ""


class JobSucceeded(Event, frozen=True, kw_only=True, tag="job.succeeded"):
    """A job finished; its result is also recorded by the domain events it caused."""

    job_id: str
    kind: JobKind
    name: str
    attempt: int
    seconds: float
    result: dict[str, Any] = msgspec.field(default_factory=dict)


class JobFailed(Event, frozen=True, kw_only=True, tag="job.failed"):
    """An attempt at a job failed; `final` when no retry follows."""

    job_id: str
    kind: JobKind
    name: str
    attempt: int
    error: str
    final: bool
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class JobRequeued(Event, frozen=True, kw_only=True, tag="job.requeued"):
    """A stalled job was handed to the queue again (the sweeper's decision, with its reason)."""

    job_id: str
    kind: JobKind
    name: str
    # the request's place in the log: the dispatcher relays the job from it again
    requested_position: int
    # attempts started so far; the next one is attempts + 1
    attempts: int
    reason: str
    # requeues since the job last started, this one included
    requeues: int = 1


class DriftChecked(Event, frozen=True, kw_only=True, tag="drift.checked"):
    """A window of live inputs was compared with a version's training reference."""

    name: str
    version: int
    severity: Severity
    rows: int
    report_sha256: str
    source: str
    environment: str | None = None
    features: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    job_id: str | None = None


class PerformanceChecked(Event, frozen=True, kw_only=True, tag="performance.checked"):
    """A version's scores in a window were compared with the outcomes observed for them."""

    name: str
    version: int
    environment: str
    severity: Severity
    # predictions of the window with a label
    rows: int
    # the window: predictions made since this many days before the check
    window_days: float
    # "binary" (auc, precision, recall, brier, ...) or "regression" (rmse, mae, ...)
    task: str
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    # the version's validation metrics the live ones were compared with
    baseline: dict[str, float] = msgspec.field(default_factory=dict)
    # calibration: per bin of predicted probability, [lower, upper, rows, mean score, rate]
    reliability: list[list[float]] = msgspec.field(default_factory=list)
    threshold: float | None = None
    job_id: str | None = None


class PerformanceAlert(Event, frozen=True, kw_only=True, tag="performance.alert"):
    """A version's live performance fell past the policy's bound, bound to the version that
    served the window."""

    name: str
    version: int
    environment: str
    metric: str
    value: float
    # what the metric was compared with: the validation value (a drop or rise) or a bound
    baseline: float | None
    # the limit passed: a drop (rise, ratio) for a baseline, else the policy's bound
    threshold: float
    severity: Severity
    rows: int
    reason: str
    job_id: str | None = None


class DataQualityChecked(Event, frozen=True, kw_only=True, tag="data_quality.checked"):
    """A window of live inputs was checked against the version's training profile: width,
    null rates, out-of-range values, unseen categories, constant features."""

    name: str
    version: int
    environment: str
    severity: Severity
    rows: int
    # logged rows whose width differs from the version's features
    width_mismatch_rate: float = 0.0
    # per feature: null_rate, training_null_rate, out_of_range_rate or unseen_rate, constant
    features: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    job_id: str | None = None


class DataQualityAlert(Event, frozen=True, kw_only=True, tag="data_quality.alert"):
    """Live inputs of a version broke a data-quality limit of the policy, bound to the
    version that served them."""

    name: str
    version: int
    environment: str
    # width, null_rate, out_of_range, unseen_categories or constant
    check: str
    value: float
    # the training figure compared with (a null rate), if any
    baseline: float | None
    threshold: float
    severity: Severity
    rows: int
    reason: str
    feature: str | None = None
    job_id: str | None = None


class BanditArm(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One arm of a bandit experiment: its Beta posterior and its share of traffic."""

    version: int
    successes: float
    failures: float
    allocation: float
    probability_best: float


class BanditUpdated(Event, frozen=True, kw_only=True, tag="bandit.updated"):
    """Rewards were folded into the arms' posteriors and traffic re-allocated."""

    name: str
    environment: str
    champion: int
    arms: list[BanditArm]
    probability_to_beat: float
    p_value: float | None = None
    rewards: int = 0
    up_to_prediction: str | None = None
    job_id: str | None = None


class ExperimentConcluded(Event, frozen=True, kw_only=True, tag="experiment.concluded"):
    """A bandit experiment reached the policy's threshold: the winner is named, not promoted."""

    name: str
    environment: str
    champion: int
    winner: int
    probability_to_beat: float
    p_value: float | None = None
    job_id: str | None = None


class ExperimentMetric(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """The primary metric: the mean of the feedback rewards of an arm's predictions."""

    name: str
    kind: MetricKind = "binary"
    direction: Direction = "increase"


FairnessMetric = Literal["demographic_parity", "equalized_odds"]


class FairnessGuardrail(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """The challenger's largest gap between the groups of a sensitive feature (its values in
    the logged input rows): demographic parity compares the groups' positive-prediction
    rates (score >= threshold), equalized odds their true- and false-positive rates against
    the outcome labels sent later (the larger of the two gaps), as fairlearn defines them.
    Groups smaller than `min_group_size` (logged rows; labelled rows for equalized odds) are
    not compared."""

    feature: str
    max_difference: float
    metric: FairnessMetric = "demographic_parity"
    threshold: float = 0.5
    min_group_size: int = 30


class Guardrails(msgspec.Struct, gc=False, frozen=True, kw_only=True, omit_defaults=True):
    """Bounds on the challenger's arm; crossing one ends the challenger (None: not checked)."""

    # share of the arm's predictions whose score is not a finite number
    max_error_rate: float | None = 0.01
    # the arm's p99 score latency, in milliseconds, as the scorer measured it
    max_p99_latency_ms: float | None = None
    fairness: FairnessGuardrail | None = None


class ExperimentStarted(Event, frozen=True, kw_only=True, tag="experiment.started"):
    """An A/B experiment between champion and challenger in one environment began: units are
    assigned to arms by a hash of the experiment id and their unit id."""

    name: str
    experiment_id: str
    environment: str
    champion: int
    challenger: int
    traffic_percent: float
    metric: ExperimentMetric
    guardrails: Guardrails
    minimum_detectable_effect: float
    alpha: float
    # outcomes per arm at which the experiment stops without a winner
    horizon_per_arm: int
    # no conclusion (nor guardrail) before this many per arm
    min_samples_per_arm: int = 100


class ArmSummary(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One arm of an experiment at an update: what it served and what came back."""

    version: int
    predictions: int
    outcomes: int
    mean: float
    variance: float
    errors: int = 0
    p99_latency_ms: float | None = None


class GuardrailCheck(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One guardrail of the challenger at an update."""

    name: str
    value: float | None
    limit: float
    passed: bool


class ArmTotals(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One arm's exact running sums, each additive: what the next look adds its rows to."""

    version: int
    predictions: int = 0
    # predictions whose score was not a finite number
    errors: int = 0
    # score latencies: 1%-wide log bucket (floor(100 ln(microseconds))) -> predictions
    latency_buckets: dict[int, int] = msgspec.field(default_factory=dict)
    outcomes: int = 0
    # the rewards' sum and sum of squares, exact (PostgreSQL numeric; decimal strings in JSON)
    total: Decimal = Decimal(0)
    total_sq: Decimal = Decimal(0)
    # with a fairness guardrail, per group of its feature: [logged rows, positive predictions,
    # rows labelled 1, of them predicted positive, rows labelled 0, of them predicted positive]
    groups: dict[str, list[int]] = msgspec.field(default_factory=dict)


class LookTotals(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """What a look carries to the next: each arm's totals over the rows its snapshot saw,
    i.e. those written by transactions with an id below `watermark` (the snapshot's xmax)
    except the ones still running then (`pending`, the snapshot's in-progress ids). Every
    later row has an id at or above the watermark or in `pending`."""

    watermark: int
    champion: ArmTotals
    challenger: ArmTotals
    pending: list[int] = msgspec.field(default_factory=list)

    @property
    def horizon(self) -> int:
        """The snapshot's xmin: every row of a transaction with a lower id is counted."""
        return min(self.pending, default=self.watermark)


class ExperimentUpdated(Event, frozen=True, kw_only=True, tag="experiment.updated"):
    """The experiment's always-valid statistics at one look (mSPRT, see domain.sequential):
    effect = challenger mean - champion mean."""

    name: str
    experiment_id: str
    champion: ArmSummary
    challenger: ArmSummary
    effect: float
    std_error: float
    # None: unbounded (fewer than two outcomes per arm so far)
    ci_low: float | None
    ci_high: float | None
    p_value: float
    guardrails: list[GuardrailCheck] = msgspec.field(default_factory=list)
    job_id: str | None = None
    # the exact running totals the next look starts from (None: it starts from scratch)
    totals: LookTotals | None = None


class ExperimentEnded(Event, frozen=True, kw_only=True, tag="experiment.ended"):
    """An A/B experiment reached its conclusion. A winner is recorded, never promoted: its
    promotion goes through the gates and approvals like any other."""

    name: str
    experiment_id: str
    environment: str
    outcome: ExperimentOutcome
    winner: int | None = None
    effect: float = 0.0
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float = 1.0
    reason: str = ""
    job_id: str | None = None


class ScorerLoaded(Event, frozen=True, kw_only=True, tag="scorer.loaded"):
    """A scorer instance serves this library for a model's environment (what actually serves,
    beside what was intended); recorded on the instance's own stream, rate-limited."""

    instance: str
    name: str
    environment: str
    version: int
    library_sha256: str
    arm: str = "champion"


class DatasetVersionAdded(Event, frozen=True, kw_only=True, tag="dataset.version_added"):
    """An upload under a dataset's name: its next version, content-addressed."""

    name: str
    dataset_version: int
    sha256: str
    rows: int
    columns: list[str]
    format: str
    size: int


class RetrainingPolicySet(Event, frozen=True, kw_only=True, tag="retraining.policy_set"):
    """A model's retraining policy changed (it applies to alerts recorded after it)."""

    name: str
    policy: RetrainingPolicy


RetrainingTrigger = Literal["drift", "performance"]


class RetrainingTriggered(Event, frozen=True, kw_only=True, tag="retraining.triggered"):
    """A critical alert made the model's retraining policy request a train job: what it
    resolved (the dataset's latest version, the parent version's parameters)."""

    name: str
    alert_event_id: str
    trigger: RetrainingTrigger
    alert_version: int
    parent_version: int
    dataset: str
    dataset_version: int
    dataset_sha256: str
    job_id: str
    # the check that raised the alert (one decision per check, whatever its alerts)
    alert_job_id: str | None = None
    evaluation_dataset_sha256: str | None = None
    reason: str = ""


class RetrainingSkipped(Event, frozen=True, kw_only=True, tag="retraining.skipped"):
    """A critical alert the retraining policy covers did not retrain, and why."""

    name: str
    alert_event_id: str
    trigger: RetrainingTrigger
    alert_version: int
    reason: str
    alert_job_id: str | None = None


AnyEvent = (
    TokenIssued
    | TokenRevoked
    | PolicySet
    | ModelRegistered
    | ModelUpdated
    | VersionRegistered
    | JobRequested
    | VersionCompiled
    | ComplianceChecked
    | VersionApproved
    | VersionRejected
    | ApprovalRevoked
    | DeploymentChanged
    | VersionRetired
    | DriftDetected
    | JobStarted
    | JobSucceeded
    | JobFailed
    | JobRequeued
    | DriftChecked
    | PerformanceChecked
    | PerformanceAlert
    | DataQualityChecked
    | DataQualityAlert
    | BanditUpdated
    | ExperimentConcluded
    | ScorerLoaded
    | ExperimentStarted
    | ExperimentUpdated
    | ExperimentEnded
    | DatasetVersionAdded
    | RetrainingPolicySet
    | RetrainingTriggered
    | RetrainingSkipped
)


def event_type(event: Event) -> str:
    """The stable tag of an event."""
    return str(type(event).__struct_config__.tag)


class EventMeta(msgspec.Struct, gc=False, frozen=True, kw_only=True, omit_defaults=True):
    """Who caused an event and why: recorded beside every event."""

    actor: str
    role: str
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None
