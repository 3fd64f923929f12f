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
    return lapse_reason(decision, version, now) is None


def lapse_reason(decision: Decision, version: VersionState, now: datetime) -> str | None:
    """Why a decision does not count toward approvals now; None while it counts.

    An approval binds the evidence present when it was given (artifact, compiled library,
    compliance reports): evidence added or replaced since lapses it, and the reason says which.
    """
    if decision.decision != "approve":
        return "rejection: a rejection never counts toward approvals"
    if decision.revoked:
        return f"revoked: {decision.revoked_reason or 'withdrawn by the approver'}"
    if decision.expires_at is not None and decision.expires_at <= now:
        return f"expired: at {decision.expires_at.isoformat()}"
    if decision.artifact_sha256 != version.artifact_sha256:
        approved = _short(decision.artifact_sha256)
        return f"evidence_changed: approved artifact {approved} is not this one"
    library = version.compiled.library_sha256 if version.compiled else None
    if decision.library_sha256 != library:
        return (
            f"evidence_changed: compiled library {_short(library)} replaced "
            f"{_short(decision.library_sha256)} after approval"
        )
    bound, now_reports = set(decision.report_sha256s), set(current_reports(version))
    if bound != now_reports:
        added = sorted(now_reports - bound)
        dropped = sorted(bound - now_reports)
        if added and not dropped:
            change = f"{_reports(added)} added after approval"
        elif dropped and not added:
            change = f"{_reports(dropped)} withdrawn after approval"
        else:
            change = f"{_reports(added)} replaced {_reports(dropped)} after approval"
        return f"evidence_changed: {change}"
    return None


def missing_evidence(version: VersionState, policy: Policy) -> list[str]:
    """Evidence the policy requires for production that the version does not have yet.

    An approval given now binds to what exists; each item here, once recorded, lapses it.
    """
    if not policy.compliance_required:
        return []
    if version.compliance is None:
        return [
            "compliance: the policy requires a compliance check and none is recorded yet; "
            "this approval binds to no report and stops counting once one is recorded"
        ]
    if not version.compliance.passed:
        return [
            f"compliance: the recorded check (report {_short(version.compliance.report_sha256)}) "
            "failed; the gate stays closed, and the passing check it needs will lapse this "
            "approval"
        ]
    return []


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "(none)"


def _reports(digests: list[str]) -> str:
    return "compliance report " + ", ".join(_short(d) for d in digests)


def valid_approvers(version: VersionState, now: datetime) -> list[str]:
    """Distinct approvers whose approval still counts (subjects compared case-insensitively,
    each named as first recorded)."""
    approvers: dict[str, str] = {}
    for decision in version.decisions:
        if approval_counts(decision, version, now):
            approvers.setdefault(subject_key(decision.approver), decision.approver)
    return list(approvers.values())


def lapsed_approvals(version: VersionState, counting: list[str], now: datetime) -> list[str]:
    """`approver (reason)` for each approval that stopped counting on its own (expired or its
    evidence changed: not revoked), unless the approver has one that counts."""
    counted = {subject_key(a) for a in counting}
    lapsed: dict[str, str] = {}
    for decision in version.decisions:
        if decision.decision != "approve" or decision.revoked:
            continue
        reason = lapse_reason(decision, version, now)
        if reason is not None and subject_key(decision.approver) not in counted:
            lapsed[subject_key(decision.approver)] = f"{decision.approver} ({reason})"
    return list(lapsed.values())


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
    lapsed = lapsed_approvals(version, approvers, now)
    gates.append(
        GateResult(
            name="approvals",
            passed=len(approvers) >= policy.required_approvals and rejection is None,
            detail=(
                f"rejected by {rejection.approver}"
                if rejection is not None
                else f"{len(approvers)} of {policy.required_approvals} required approvals "
                f"({model.risk_tier} risk)"
                + (f": {', '.join(approvers)}" if approvers else "")
                + (f"; lapsed: {'; '.join(lapsed)}" if lapsed else "")
            ),
        )
    )
    return gates


def _compiled_gates(version: VersionState, policy: Policy) -> list[GateResult]:
    compiled = version.compiled
    if compiled is None:
        return [GateResult(name="compiled", passed=False, detail="no certified native build yet")]
    limit = policy.parity_tolerance(version.format)
    reference = f" against {compiled.reference}" if compiled.reference else ""
    scaled = "" if compiled.max_scaled_diff is None else f", scaled {compiled.max_scaled_diff:g}"
    return [
        GateResult(
            name="compiled",
            passed=compiled.parity() <= limit,
            detail=f"parity max abs diff {compiled.max_abs_diff:g}{scaled} over "
            f"{compiled.rows_checked} rows{reference} (limit {limit:g})",
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
