"""Deciders: `decide(command, state, ...) -> events`, pure; they raise domain errors."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.gates import current_reports, valid_approvers
from domain.policy import Policy
from domain.state import ModelState, VersionState
from domain.subjects import same_subject

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


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


def update_model(command: cmd.UpdateModel, state: ModelState | None) -> list[ev.Event]:
    """Change descriptive fields; nothing if nothing changes."""
    model = require_model(command.name, state)
    changes = {
        k: v
        for k, v in _fields(command).items()
        if k != "name" and v is not None and v != getattr(model, k)
    }
    return [ev.ModelUpdated(name=command.name, **changes)] if changes else []


def register_version(command: cmd.RegisterVersion, state: ModelState | None) -> list[ev.Event]:
    """A new immutable version, and the compile job it needs."""
    name = command.name
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
        ev.JobRequested(
            job_id=command.compile_job_id,
            kind="compile",
            name=name,
            version=version,
            params=dict(command.compile_params),
        ),
    ]


def decide_approval(
    command: cmd.DecideVersion, state: ModelState | None, facts: cmd.Facts
) -> list[ev.Event]:
    """Approve or reject a version: four-eyes, bound to the digests it has now."""
    name, number, approver = command.name, command.version, command.approver
    policy, policy_version, now = facts.policy, facts.policy_version, facts.now
    model = require_model(name, state)
    version = require_version(model, number)
    if any(same_subject(approver, s) for s in [version.registered_by, *version.requested_by]):
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
    if any(same_subject(approver, s) for s in valid_approvers(version, now)):
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


def revoke_approval(command: cmd.RevokeDecision, state: ModelState | None) -> list[ev.Event]:
    """Withdraw one's own standing decisions on a version.

    One event per spelling the approver's decisions were recorded under (subjects compare
    case-insensitively; older events may differ in case), so each names a recorded approver.
    """
    name, number, approver = command.name, command.version, command.approver
    version = require_version(require_model(name, state), number)
    standing = {
        d.approver: None
        for d in version.decisions
        if not d.revoked and same_subject(d.approver, approver)
    }
    if not standing:
        raise Conflict(f"{approver} has no standing decision on version {number}")
    return [
        ev.ApprovalRevoked(name=name, version=number, approver=spelling, reason=command.reason)
        for spelling in standing
    ]


def retire(command: cmd.RetireVersion, state: ModelState | None) -> list[ev.Event]:
    """Retire a version that serves nowhere."""
    name, number = command.name, command.version
    model = require_model(name, state)
    version = require_version(model, number)
    if version.retired_at is not None:
        raise Conflict(f"version {number} is already retired")
    serving = [
        env for env, slot in model.deployments.items() if number in (slot.champion, slot.challenger)
    ]
    if serving:
        raise Conflict(f"version {number} still serves in {', '.join(sorted(serving))}")
    return [ev.VersionRetired(name=name, version=number, reason=command.reason)]


def raise_drift_alert(command: cmd.RaiseDriftAlert, state: ModelState | None) -> list[ev.Event]:
    """Record drift bound to the version that served the window."""
    require_version(require_model(command.name, state), command.version)
    return [ev.DriftDetected(**_fields(command))]


def set_policy(command: cmd.SetPolicy) -> list[ev.Event]:
    """A new policy version for a tier."""
    if command.policy.required_approvals < 1:
        raise InvalidInput("required_approvals must be at least 1", field="required_approvals")
    if command.tier not in ("low", "medium", "high"):
        raise NotFound(f"no risk tier {command.tier!r}")
    return [ev.PolicySet(risk_tier=command.tier, policy=command.policy)]  # type: ignore[arg-type]


def amend_policy(command: cmd.AmendPolicy, facts: cmd.Facts) -> list[ev.Event]:
    """A new policy version: the one in force (`facts.policy`) with the given fields changed."""
    if command.tier not in ("low", "medium", "high"):
        raise NotFound(f"no risk tier {command.tier!r}")
    merged = {**msgspec.to_builtins(facts.policy), **msgspec.to_builtins(command.changes)}
    try:
        policy = msgspec.convert(merged, Policy)
    except msgspec.ValidationError as error:
        raise InvalidInput(f"policy: {error}") from error
    return set_policy(cmd.SetPolicy(tier=command.tier, policy=policy))


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


def _fields(struct: object) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}  # type: ignore[attr-defined]
