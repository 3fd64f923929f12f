"""Request and response bodies of the REST API. Not domain events: they may differ."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from app.services.views import ModelView, VersionView
from domain.events import ModelFormat, RiskTier, Role, Severity, Strategy


class Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


class TokenCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    subject: str
    role: Role


class TokenCreated(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    subject: str
    role: Role
    token: str
    position: int


class TokenRevoke(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # why, for the audit trail (at most 500 characters)
    reason: str = ""


class TokenRevokedOut(msgspec.Struct, frozen=True, kw_only=True):
    """The token's revocation as recorded: the first one, however often it is asked for."""

    token_id: str
    subject: str
    role: Role
    reason: str
    revoked_by: str
    revoked_at: datetime
    # where `token.revoked` is in the log
    position: int
    # false when the token was already revoked: nothing was appended this time
    revoked_now: bool


class TokenOut(msgspec.Struct, frozen=True, kw_only=True):
    """A token as an admin may see it: never the token or its hash."""

    token_id: str
    # normalised: subjects compare case-insensitively
    subject: str
    role: Role
    issued_at: datetime
    issued_by: str
    position: int
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None
    revoked_position: int | None


class TokenList(msgspec.Struct, frozen=True, kw_only=True):
    tokens: list[TokenOut]


class EventOut(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored; `data` and `meta` are the exact JSON the chain covers."""

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    type: str
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime
    prev_hash: str
    hash: str


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[EventOut]
    next: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class DatabaseRole(msgspec.Struct, frozen=True, kw_only=True):
    """The role the server connects as, and what it could do to the log beyond appending."""

    name: str
    least_privilege: bool
    problems: list[str]


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    database: str
    redis: str
    head_position: int
    database_role: DatabaseRole | None = None


class ValidationMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One failed check of a request's parameters or body."""

    message: str
    key: str | UnsetType = UNSET
    source: str | UnsetType = UNSET


class UnmetGate(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    detail: str
    environment: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details (`application/problem+json`) as `app.http.problems` emits them.

    `type` is `urn:model-ledger:problem:` followed by `code`, the problem's stable name (a
    domain error such as `four_eyes`, or the status's own such as `bad_request`). The members
    after `code` are extensions, present only when they apply: the error's own context.
    """

    type: Annotated[str, msgspec.Meta(pattern=r"^urn:model-ledger:problem:[a-z0-9_]+$")]
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    detail: str
    code: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]+$")]
    errors: list[ValidationMessage] | UnsetType = UNSET
    field: str | UnsetType = UNSET
    code_detail: str | UnsetType = UNSET
    unmet_gates: list[UnmetGate] | UnsetType = UNSET
    stream: str | UnsetType = UNSET
    expected_version: int | UnsetType = UNSET
    actual_version: int | UnsetType = UNSET
    sha256: str | UnsetType = UNSET
    limit: int | UnsetType = UNSET


class ModelCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    risk_tier: RiskTier
    description: str = ""
    owner: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    sensitive_features: list[str] = msgspec.field(default_factory=list)


class ModelPatch(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str | None = None
    owner: str | None = None
    tags: list[str] | None = None
    sensitive_features: list[str] | None = None


class LineageIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    git_commit: str | None = None
    ci_run_url: str | None = None
    dataset_sha256: str | None = None


class VersionMetadata(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `metadata` part of a version upload."""

    format: ModelFormat
    feature_names: list[str] | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lineage: LineageIn = msgspec.field(default_factory=LineageIn)


class VersionCreated(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    artifact_sha256: str
    state: str
    compile_job_id: str | None
    position: int


class DecisionCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["approve", "reject"]
    comment: str = ""


class EvidenceBinding(msgspec.Struct, frozen=True, kw_only=True):
    """The digests an approval is bound to: it counts only while the version still has them."""

    artifact_sha256: str
    library_sha256: str | None
    report_sha256s: list[str]


class DecisionOut(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    approver: str
    decision: str
    comment: str
    policy_version: int
    expires_at: datetime | None
    position: int
    # an approval: the evidence it binds; null for a rejection
    binds_to: EvidenceBinding | None = None
    # evidence the policy requires that is still missing: once recorded, it lapses this approval
    warnings: list[str] = msgspec.field(default_factory=list)


class ReportOut(msgspec.Struct, frozen=True, kw_only=True):
    """A compliance or drift report as stored (the digest is of its JSON bytes)."""

    model: str
    version: int
    sha256: str
    kind: Literal["compliance", "drift"]
    # the event that recorded it
    position: int
    # compliance: per sensitive feature and group, selection rate, TPR, FPR, AUC and the
    # differences the policy judged; drift: per feature PSI, KS, chi-square with its p-value,
    # Cramér's V, Wasserstein, and the severities
    report: dict[str, Any]


class RevocationCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str


class RetirementCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str


class RetirementOut(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    reason: str
    position: int


class PromotionCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    environment: str
    strategy: Strategy = "full"
    traffic_percent: float | None = None
    dry_run: bool = False


class ChangeIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One change: `promote` a version (as a promotion does), or `end_challenger`: stop the
    canary, shadow or bandit experiment of the environment (the champion takes all traffic;
    `reason` required, recorded with the change)."""

    environment: str
    action: Literal["promote", "end_challenger"] = "promote"
    # promote: the version to serve (required)
    version: int | None = None
    strategy: Strategy = "full"
    traffic_percent: float | None = None
    # end_challenger: why (required); recorded in the log with who asked
    reason: str = ""


class ChangesCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    changes: list[ChangeIn]
    dry_run: bool = False


class GateOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    passed: bool
    detail: str


class PromotionPlan(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    gates: list[GateOut]


class DeploymentOut(msgspec.Struct, frozen=True, kw_only=True):
    environment: str
    action: str
    version: int
    champion: int | None
    challenger: int | None
    strategy: str
    traffic_percent: float | None
    policy_version: int
    gates: list[GateOut]
    position: int
    # why, as recorded (a rollback's or an ended challenger's reason, a conclusion's result)
    reason: str = ""


class DeploymentsOut(msgspec.Struct, frozen=True, kw_only=True):
    deployments: list[DeploymentOut]


class RollbackCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    environment: str
    reason: str


class DriftAlertCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    statistic: str
    value: float
    threshold: float
    severity: Severity
    feature: str | None = None
    environment: str | None = None


class DriftAlertOut(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    statistic: str
    value: float
    threshold: float
    severity: str
    feature: str | None
    environment: str | None
    position: int
    actions: list[DeploymentOut]


class HistoryOut(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    as_of_position: int
    events: list[EventOut]


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    """Every model, each with its versions and deployments per environment."""

    models: list[ModelView]


class VersionList(msgspec.Struct, frozen=True, kw_only=True):
    """Every version of a model, oldest first."""

    versions: list[VersionView]
