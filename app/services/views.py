"""Read models of the registry: one rendering for the current view and for any past instant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain.events import Lineage
from domain.gates import evaluate_gates, lapse_reason, lifecycle_state
from domain.policy import GateResult, PolicyBook
from domain.state import ModelState, VersionState

# the environment whose gates a version's detail view shows
GATED_VIEW_ENVIRONMENT = "production"


class CompiledView(msgspec.Struct, frozen=True, kw_only=True):
    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    compiler: str
    compile_seconds: float
    recorded_at: datetime
    # max_abs_diff / max(1, max |reference score|), what the limit judges (null: not measured)
    max_scaled_diff: float | None = None
    # what computed the reference scores ("lightgbm 4.7.0", "xgboost 3.2.0")
    reference: str = ""
    # the tier policy's parity limit for this version's format
    tolerance: float | None = None


class ComplianceView(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    report_sha256: str
    policy_version: int
    metrics: dict[str, float]


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    approver: str
    decision: str
    comment: str
    policy_version: int
    recorded_at: datetime
    expires_at: datetime | None
    revoked: bool
    counts: bool
    # why it does not count (null while it does), e.g. "evidence_changed: compliance report
    # 3f2a... added after approval"
    reason: str | None
    position: int


class VersionView(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    state: str
    format: str
    artifact_sha256: str
    feature_names: list[str]
    metrics: dict[str, float]
    params: dict[str, Any]
    lineage: Lineage
    registered_at: datetime
    registered_by: str
    compiled: CompiledView | None
    compliance: ComplianceView | None
    approvals: list[ApprovalView]
    serving: dict[str, str]
    retired_at: datetime | None
    retired_reason: str | None
    gates: list[GateResult] | None = None


class DeploymentView(msgspec.Struct, frozen=True, kw_only=True):
    champion: int | None
    challenger: int | None
    strategy: str
    traffic_percent: float | None
    updated_at: datetime | None
    updated_by: str | None
    # the last change: promotion, demotion (a challenger ended), rollback or conclusion (a
    # bandit experiment settled on its winner), and the reason recorded with it
    action: str
    reason: str


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    risk_tier: str
    description: str
    owner: str
    tags: list[str]
    sensitive_features: list[str]
    registered_at: datetime
    registered_by: str
    versions: list[VersionView]
    deployments: dict[str, DeploymentView]
    drift_alerts: int
    # the model stream's version; send it back as If-Match to promote only if unchanged
    stream_version: int


def render_version(
    model: ModelState, version: VersionState, policies: PolicyBook, now: datetime, *, gates: bool
) -> VersionView:
    """A version as the API shows it, its state judged at `now` under the tier's policy."""
    policy, _ = policies.of(model.risk_tier)
    compiled, check = version.compiled, version.compliance
    serving = {
        env: "champion" if slot.champion == version.version else "challenger"
        for env, slot in sorted(model.deployments.items())
        if version.version in (slot.champion, slot.challenger)
    }
    return VersionView(
        version=version.version,
        state=lifecycle_state(version, policy, now),
        format=version.format,
        artifact_sha256=version.artifact_sha256,
        feature_names=version.feature_names,
        metrics=version.metrics,
        params=version.params,
        lineage=version.lineage,
        registered_at=version.registered_at,
        registered_by=version.registered_by,
        compiled=None
        if compiled is None
        else CompiledView(
            library_sha256=compiled.library_sha256,
            max_abs_diff=compiled.max_abs_diff,
            rows_checked=compiled.rows_checked,
            compiler=compiled.compiler,
            compile_seconds=compiled.compile_seconds,
            recorded_at=compiled.recorded_at,
            max_scaled_diff=compiled.max_scaled_diff,
            reference=compiled.reference,
            tolerance=policy.parity_tolerance(version.format),
        ),
        compliance=None
        if check is None
        else ComplianceView(
            passed=check.passed,
            report_sha256=check.report_sha256,
            policy_version=check.policy_version,
            metrics=check.metrics,
        ),
        approvals=[
            ApprovalView(
                approver=d.approver,
                decision=d.decision,
                comment=d.comment,
                policy_version=d.policy_version,
                recorded_at=d.recorded_at,
                expires_at=d.expires_at,
                revoked=d.revoked,
                counts=(reason := lapse_reason(d, version, now)) is None,
                reason=reason,
                position=d.position,
            )
            for d in version.decisions
        ],
        serving=serving,
        retired_at=version.retired_at,
        retired_reason=version.retired_reason,
        gates=evaluate_gates(model, version, GATED_VIEW_ENVIRONMENT, policy, now)
        if gates
        else None,
    )


def render_model(model: ModelState, policies: PolicyBook, now: datetime) -> ModelView:
    """A model with every version and its deployments."""
    return ModelView(
        name=model.name,
        risk_tier=model.risk_tier,
        description=model.description,
        owner=model.owner,
        tags=model.tags,
        sensitive_features=model.sensitive_features,
        registered_at=model.registered_at,
        registered_by=model.registered_by,
        versions=[
            render_version(model, v, policies, now, gates=False)
            for _, v in sorted(model.versions.items())
        ],
        deployments={
            env: DeploymentView(
                champion=slot.champion,
                challenger=slot.challenger,
                strategy=slot.strategy,
                traffic_percent=slot.traffic_percent,
                updated_at=slot.updated_at,
                updated_by=slot.updated_by,
                action=slot.action,
                reason=slot.reason,
            )
            for env, slot in sorted(model.deployments.items())
        },
        drift_alerts=len(model.drift_alerts),
        stream_version=model.stream_version,
    )
