"""Gate evaluation and lifecycle: what a version has earned under a policy, at an instant."""

from __future__ import annotations

from datetime import datetime

from domain.policy import GateResult, Policy
from domain.state import Decision, ModelState, VersionState
from domain.subjects import subject_key


def current_reports(version: VersionState) -> list[str]:
    """Digests of the reports an approval must be bound to (the latest compliance report)."""
    return [version.compliance.report_sha256] if version.compliance else []


def approval_counts(decision: Decision, version: VersionState, now: datetime) -> bool:
    """An approval counts if not revoked, not expired, and bound to the current digests."""
    library = version.compiled.library_sha256 if version.compiled else None
    return (
        decision.decision == "approve"
        and not decision.revoked
        and (decision.expires_at is None or decision.expires_at > now)
        and decision.artifact_sha256 == version.artifact_sha256
        and decision.library_sha256 == library
        and sorted(decision.report_sha256s) == sorted(current_reports(version))
    )


def valid_approvers(version: VersionState, now: datetime) -> list[str]:
    """Distinct approvers whose approval still counts (subjects compared case-insensitively,
    each named as first recorded)."""
    approvers: dict[str, str] = {}
    for decision in version.decisions:
        if approval_counts(decision, version, now):
            approvers.setdefault(subject_key(decision.approver), decision.approver)
    return list(approvers.values())


def standing_rejection(version: VersionState) -> Decision | None:
    """The newest decision if it is a rejection that was not revoked."""
    live = [d for d in version.decisions if not d.revoked]
    return live[-1] if live and live[-1].decision == "reject" else None


def lifecycle_state(version: VersionState, policy: Policy, now: datetime) -> str:
    """registered, compiled, validated, approved, rejected or retired."""
    if version.retired_at is not None:
        return "retired"
    if standing_rejection(version) is not None:
        return "rejected"
    if version.compiled is None:
        return "registered"
    if len(valid_approvers(version, now)) >= policy.required_approvals and _validated(
        version, policy
    ):
        return "approved"
    return "validated" if _validated(version, policy) else "compiled"


def _validated(version: VersionState, policy: Policy) -> bool:
    checks = [*_compiled_gates(version, policy), *_metric_gates(version, policy)]
    checks += _compliance_gates(version, policy)
    return all(gate.passed for gate in checks)


def evaluate_gates(
    model: ModelState, version: VersionState, environment: str, policy: Policy, now: datetime
) -> list[GateResult]:
    """Every gate a promotion of `version` to `environment` must pass, passed or not."""
    gates = [
        GateResult(
            name="not_retired",
            passed=version.retired_at is None,
            detail="version is active" if version.retired_at is None else "version is retired",
        ),
        *_compiled_gates(version, policy),
    ]
    if environment not in policy.gated_environments:
        return gates
    gates += _metric_gates(version, policy)
    gates += _compliance_gates(version, policy)
    approvers = valid_approvers(version, now)
    rejection = standing_rejection(version)
    gates.append(
        GateResult(
            name="approvals",
            passed=len(approvers) >= policy.required_approvals and rejection is None,
            detail=(
                f"rejected by {rejection.approver}"
                if rejection is not None
                else f"{len(approvers)} of {policy.required_approvals} required approvals "
                f"({model.risk_tier} risk)" + (f": {', '.join(approvers)}" if approvers else "")
            ),
        )
    )
    return gates


def _compiled_gates(version: VersionState, policy: Policy) -> list[GateResult]:
    compiled = version.compiled
    if compiled is None:
        return [GateResult(name="compiled", passed=False, detail="no certified native build yet")]
    within = compiled.max_abs_diff <= policy.max_parity_abs_diff
    return [
        GateResult(
            name="compiled",
            passed=within,
            detail=f"parity max abs diff {compiled.max_abs_diff:g} over {compiled.rows_checked} "
            f"rows (limit {policy.max_parity_abs_diff:g})",
        )
    ]


def _metric_gates(version: VersionState, policy: Policy) -> list[GateResult]:
    gates = []
    for metric, threshold in sorted(policy.metric_thresholds.items()):
        value = version.metrics.get(metric)
        gates.append(
            GateResult(
                name=f"metric:{metric}",
                passed=value is not None and threshold.admits(value),
                detail=(
                    f"{metric} not reported (needs {threshold.describe()})"
                    if value is None
                    else f"{metric} = {value:g} (needs {threshold.describe()})"
                ),
            )
        )
    return gates


def _compliance_gates(version: VersionState, policy: Policy) -> list[GateResult]:
    if not policy.compliance_required:
        return []
    check = version.compliance
    return [
        GateResult(
            name="compliance",
            passed=check is not None and check.passed,
            detail=(
                "no compliance check yet"
                if check is None
                else f"{'passed' if check.passed else 'failed'} (report {check.report_sha256[:12]})"
            ),
        )
    ]
