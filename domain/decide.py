"""Deciders: `decide(command, state, ...) -> events`, pure; they raise domain errors."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from domain import commands as cmd
from domain import events as ev
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.gates import current_reports, evaluate_gates, valid_approvers
from domain.model import ModelState, VersionState
from domain.policy import GateResult, Policy

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class FourEyes(Forbidden):
    """An approver may not approve what they registered or requested."""

    code = "four_eyes"


def model_stream(name: str) -> str:
    """The stream holding a model's whole history."""
    return f"model-{name}"


def policy_stream(tier: str) -> str:
    """The stream holding a risk tier's policy versions."""
    return f"policy-{tier}"


def register_model(command: cmd.RegisterModel, state: ModelState | None) -> list[ev.Event]:
    """A new model name; names are unique forever."""
    if not _NAME.match(command.name):
        raise InvalidInput(
            "model name must be 1-100 of a-z, 0-9, '.', '_', '-', starting alphanumeric",
            field="name",
        )
    if state is not None:
        raise Conflict(f"model {command.name!r} already exists", code_detail="model_exists")
    return [ev.ModelRegistered(**_fields(command))]


def update_model(name: str, command: cmd.UpdateModel, state: ModelState | None) -> list[ev.Event]:
    """Change descriptive fields; nothing if nothing changes."""
    model = require_model(name, state)
    changes = {
        k: v for k, v in _fields(command).items() if v is not None and v != getattr(model, k)
    }
    return [ev.ModelUpdated(name=name, **changes)] if changes else []


def register_version(
    state: ModelState | None, name: str, command: cmd.RegisterVersion, *, job_id: str
) -> list[ev.Event]:
    """A new immutable version, and the compile job it needs."""
    model = require_model(name, state)
    names = command.feature_names or command.model_feature_names
    if command.feature_names is not None and len(names) != len(command.model_feature_names):
        raise InvalidInput(
            f"feature_names has {len(names)} names but the model uses "
            f"{len(command.model_feature_names)} features",
            field="feature_names",
        )
    version = model.next_version()
    return [
        ev.VersionRegistered(
            name=name,
            version=version,
            artifact_sha256=command.artifact_sha256,
            artifact_size=command.artifact_size,
            format=command.format,
            feature_names=list(names),
            metrics=dict(command.metrics),
            params=dict(command.params),
            lineage=command.lineage,
            num_trees=command.num_trees,
        ),
        ev.JobRequested(job_id=job_id, kind="compile", name=name, version=version),
    ]


def decide_approval(
    state: ModelState | None,
    name: str,
    number: int,
    command: cmd.Decide,
    *,
    approver: str,
    policy: Policy,
    policy_version: int,
    now: datetime,
) -> list[ev.Event]:
    """Approve or reject a version: four-eyes, bound to the digests it has now."""
    model = require_model(name, state)
    version = require_version(model, number)
    if approver == version.registered_by or approver in version.requested_by:
        raise FourEyes(
            f"{approver} registered or requested version {number}; another approver must decide"
        )
    if version.retired_at is not None:
        raise Conflict(f"version {number} is retired")
    if version.compiled is None:
        raise Conflict(f"version {number} is not compiled yet: nothing certified to approve")
    if command.decision == "reject":
        return [
            ev.VersionRejected(
                name=name,
                version=number,
                approver=approver,
                comment=command.comment,
                policy_version=policy_version,
            )
        ]
    if approver in valid_approvers(version, now):
        raise Conflict(f"{approver} already approved version {number}")
    return [
        ev.VersionApproved(
            name=name,
            version=number,
            approver=approver,
            comment=command.comment,
            policy_version=policy_version,
            artifact_sha256=version.artifact_sha256,
            library_sha256=version.compiled.library_sha256,
            report_sha256s=current_reports(version),
            expires_at=now + timedelta(days=policy.approval_expiry_days),
        )
    ]


def revoke_approval(
    state: ModelState | None, name: str, number: int, *, approver: str, reason: str
) -> list[ev.Event]:
    """Withdraw one's own standing decision on a version."""
    version = require_version(require_model(name, state), number)
    if not any(d.approver == approver and not d.revoked for d in version.decisions):
        raise Conflict(f"{approver} has no standing decision on version {number}")
    return [ev.ApprovalRevoked(name=name, version=number, approver=approver, reason=reason)]


def plan_promotions(
    state: ModelState | None,
    name: str,
    changes: list[cmd.Promote],
    *,
    policy: Policy,
    now: datetime,
) -> list[tuple[cmd.Promote, list[GateResult]]]:
    """The gates of each change, without deciding (a dry run shows exactly these)."""
    model = require_model(name, state)
    plan = []
    for change in changes:
        _check_change(model, change)
        version = require_version(model, change.version)
        plan.append((change, evaluate_gates(model, version, change.environment, policy, now)))
    return plan


def promote(
    state: ModelState | None,
    name: str,
    changes: list[cmd.Promote],
    *,
    policy: Policy,
    policy_version: int,
    now: datetime,
) -> list[ev.Event]:
    """Move serving pointers, all or none; 409 listing every unmet gate."""
    plan = plan_promotions(state, name, changes, policy=policy, now=now)
    unmet = [
        {"name": gate.name, "detail": gate.detail, "environment": change.environment}
        for change, gates in plan
        for gate in gates
        if not gate.passed
    ]
    if unmet:
        raise Conflict(
            "promotion blocked: " + "; ".join(f"{g['name']}: {g['detail']}" for g in unmet),
            unmet_gates=unmet,
        )
    assert state is not None
    return [_deployment_change(state, change, gates, policy_version) for change, gates in plan]


def rollback(state: ModelState | None, name: str, command: cmd.Rollback) -> list[ev.Event]:
    """Return an environment to its last good champion."""
    model = require_model(name, state)
    slot = model.deployments.get(command.environment)
    if slot is None or slot.champion is None:
        raise Conflict(f"nothing is deployed to {command.environment}")
    bad = {*slot.rolled_back, slot.champion}
    earlier = [
        v
        for v in reversed(slot.champion_history)
        if v not in bad and model.versions[v].retired_at is None
    ]
    if not earlier:
        raise Conflict(f"{command.environment} has no earlier good champion to return to")
    return [
        ev.DeploymentChanged(
            name=name,
            environment=command.environment,
            action="rollback",
            version=earlier[0],
            champion=earlier[0],
            reason=command.reason,
        )
    ]


def retire(state: ModelState | None, name: str, number: int, reason: str) -> list[ev.Event]:
    """Retire a version that serves nowhere."""
    model = require_model(name, state)
    version = require_version(model, number)
    if version.retired_at is not None:
        raise Conflict(f"version {number} is already retired")
    serving = [
        env for env, slot in model.deployments.items() if number in (slot.champion, slot.challenger)
    ]
    if serving:
        raise Conflict(f"version {number} still serves in {', '.join(sorted(serving))}")
    return [ev.VersionRetired(name=name, version=number, reason=reason)]


def raise_drift_alert(
    state: ModelState | None, name: str, command: cmd.RaiseDriftAlert
) -> list[ev.Event]:
    """Record drift bound to the version that served the window."""
    require_version(require_model(name, state), command.version)
    return [ev.DriftDetected(name=name, **_fields(command))]


def drift_action(state: ModelState, alert: ev.DriftDetected, policy: Policy) -> list[ev.Event]:
    """What policy does about a drift alert: demote a critically drifting canary."""
    if alert.severity != "critical" or policy.critical_drift_on_canary == "none":
        return []
    return [
        ev.DeploymentChanged(
            name=state.name,
            environment=env,
            action="demotion",
            version=alert.version,
            champion=slot.champion,
            reason=f"critical drift: {alert.statistic} = {alert.value:g} > {alert.threshold:g}",
        )
        for env, slot in sorted(state.deployments.items())
        if slot.challenger == alert.version
        and slot.strategy == "canary"
        and (alert.environment is None or alert.environment == env)
    ]


def set_policy(tier: str, policy: Policy) -> list[ev.Event]:
    """A new policy version for a tier."""
    if policy.required_approvals < 1:
        raise InvalidInput("required_approvals must be at least 1", field="required_approvals")
    if tier not in ("low", "medium", "high"):
        raise NotFound(f"no risk tier {tier!r}")
    return [ev.PolicySet(risk_tier=tier, policy=policy)]  # type: ignore[arg-type]


def require_model(name: str, state: ModelState | None) -> ModelState:
    """The model, or NotFound."""
    if state is None:
        raise NotFound(f"no model named {name!r}")
    return state


def require_version(model: ModelState, number: int) -> VersionState:
    """The version, or NotFound."""
    version = model.versions.get(number)
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    return version


def _check_change(model: ModelState, change: cmd.Promote) -> None:
    if not _ENVIRONMENT.match(change.environment):
        raise InvalidInput("environment must be 1-40 of a-z, 0-9, '_', '-'", field="environment")
    if change.strategy == "canary" and not (0 < (change.traffic_percent or 0) < 100):
        raise InvalidInput("canary needs 0 < traffic_percent < 100", field="traffic_percent")
    if change.strategy != "canary" and change.traffic_percent is not None:
        raise InvalidInput("traffic_percent applies to canary only", field="traffic_percent")
    slot = model.deployments.get(change.environment)
    if change.strategy != "full" and (slot is None or slot.champion is None):
        raise Conflict(f"{change.strategy} needs a champion in {change.environment} to run beside")
    if slot is not None and change.version in (slot.champion, slot.challenger):
        serving = "champion" if change.version == slot.champion else "challenger"
        if change.strategy == "full" and serving == "champion":
            raise Conflict(f"version {change.version} is already champion in {change.environment}")


def _deployment_change(
    state: ModelState, change: cmd.Promote, gates: list[GateResult], policy_version: int
) -> ev.DeploymentChanged:
    slot = state.deployments.get(change.environment)
    full = change.strategy == "full"
    return ev.DeploymentChanged(
        name=state.name,
        environment=change.environment,
        action="promotion",
        version=change.version,
        champion=change.version if full else (slot.champion if slot else None),
        challenger=None if full else change.version,
        strategy=change.strategy,
        traffic_percent=change.traffic_percent,
        policy_version=policy_version,
        gates=gates,
    )


def _fields(struct: object) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}  # type: ignore[attr-defined]
