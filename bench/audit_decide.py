"""The log, re-decided: sampled model streams replayed through the pure deciders, event by
event, to show the log is one the server could have written."""

from __future__ import annotations

from typing import Any

from app.store.codec import RecordedEvent, context_of
from app.store.events import EventStore
from bench.audit_fleet import TIERS
from domain import commands as cmd
from domain import decide, handle
from domain import events as ev
from domain.decide import model_stream, policy_stream
from domain.errors import DomainError
from domain.model import evolve
from domain.policy import PolicyBook
from domain.state import ModelState

# what must agree between the event the deciders would append and the one the log has
_COMPARED = ("version", "champion", "challenger", "strategy", "environment", "action")


def _redecided(
    state: ModelState | None,
    recorded: RecordedEvent,
    policies: PolicyBook,
    alerts: dict[str, ev.DriftDetected],
) -> None:
    """Raise unless the deciders, given the state before it, would emit this event."""
    tier = state.risk_tier if state is not None else "low"
    policy, policy_version = policies.of(tier)
    facts = cmd.Facts(now=recorded.recorded_at, policy=policy, policy_version=policy_version)
    command = _command(state, recorded, alerts)
    if command is None:
        return
    expected = handle.decide(command, state, facts)
    if isinstance(command, cmd.RegisterVersion):
        expected = expected[:1]  # the compile request is checked as a job event
    event = recorded.event
    if len(expected) != 1 or any(
        getattr(expected[0], k, None) != getattr(event, k, None) for k in _COMPARED
    ):
        raise DomainError(f"the deciders would append {expected}, the log has {event}")


def _command(
    state: ModelState | None, recorded: RecordedEvent, alerts: dict[str, ev.DriftDetected]
) -> cmd.Command | None:
    """The command that would have appended the recorded event (None: a job's event)."""
    event, meta = recorded.event, recorded.meta
    match event:
        case ev.ModelRegistered() | ev.ModelUpdated() | ev.VersionRegistered():
            return _model_command(event)
        case ev.JobRequested() | ev.VersionCompiled() | ev.ComplianceChecked():
            # jobs and their results: only a version that exists can have them
            decide.require_version(decide.require_model(event.name, state), event.version or 0)
            return None
        case ev.VersionApproved() | ev.VersionRejected() | ev.ApprovalRevoked():
            return _decision_command(event, meta)
        case ev.DeploymentChanged(action="promotion" | "rollback" | "demotion"):
            return _deployment_command(event, meta, alerts)
        case ev.VersionRetired():
            return cmd.RetireVersion(name=event.name, version=event.version, reason=event.reason)
        case ev.DriftDetected():
            # the command's fields only: the event also records the job that measured it
            fields = {k: getattr(event, k) for k in cmd.RaiseDriftAlert.__struct_fields__}
            command = cmd.RaiseDriftAlert(**fields)
            alerts[str(recorded.event_id)] = event
            return command
        case _:
            raise DomainError(f"unexpected {ev.event_type(event)} in a model stream")


def _model_command(
    event: ev.ModelRegistered | ev.ModelUpdated | ev.VersionRegistered,
) -> cmd.Command:
    if isinstance(event, ev.ModelRegistered):
        return cmd.RegisterModel(**_fields(event))
    if isinstance(event, ev.ModelUpdated):
        return cmd.UpdateModel(**_fields(event))
    return cmd.RegisterVersion(
        name=event.name,
        compile_job_id="-",
        artifact_sha256=event.artifact_sha256,
        artifact_size=event.artifact_size,
        format=event.format,
        model_feature_names=event.feature_names,
        metrics=event.metrics,
        params=event.params,
        lineage=event.lineage,
        num_trees=event.num_trees,
    )


def _decision_command(
    event: ev.VersionApproved | ev.VersionRejected | ev.ApprovalRevoked, meta: ev.EventMeta
) -> cmd.Command:
    if isinstance(event, ev.ApprovalRevoked):
        return cmd.RevokeDecision(
            name=event.name, version=event.version, approver=meta.actor, reason=event.reason
        )
    if event.approver != meta.actor:
        raise DomainError(f"{meta.actor} recorded a decision of {event.approver}")
    return cmd.DecideVersion(
        name=event.name,
        version=event.version,
        approver=meta.actor,
        decision="approve" if isinstance(event, ev.VersionApproved) else "reject",
        comment=event.comment,
    )


def _deployment_command(
    event: ev.DeploymentChanged, meta: ev.EventMeta, alerts: dict[str, ev.DriftDetected]
) -> cmd.Command:
    if event.action == "rollback":
        return cmd.Rollback(name=event.name, environment=event.environment, reason=event.reason)
    if event.action == "demotion":
        return cmd.RespondToDrift(name=event.name, alert=alerts[meta.causation_id or ""])
    change = cmd.Promote(
        version=event.version,
        environment=event.environment,
        strategy=event.strategy,
        traffic_percent=event.traffic_percent,
    )
    return cmd.ChangeDeployments(name=event.name, changes=[change])


def _fields(struct: Any) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}


async def _policy_events(store: EventStore) -> list[RecordedEvent]:
    """Every tier's policy changes, in log order."""
    found = [e for tier in TIERS for e in await store.read_stream(policy_stream(tier))]
    return sorted(found, key=lambda e: e.position)


async def check_with_deciders(store: EventStore, names: list[str]) -> dict[str, Any]:
    """Replay sampled model streams through the deciders; count what they would refuse."""
    policy_events = await _policy_events(store)
    checked, refused = 0, []
    for name in names:
        state: ModelState | None = None
        policies, applied = PolicyBook(), 0
        alerts: dict[str, ev.DriftDetected] = {}
        for recorded in await store.read_stream(model_stream(name)):
            applied = _apply_policies(policies, policy_events, applied, recorded.position)
            checked += 1
            try:
                _redecided(state, recorded, policies, alerts)
            except DomainError as error:
                refused.append(f"{name}@{recorded.version}: {error}"[:300])
            state = evolve(state, recorded.event, context_of(recorded))
    return {"models": len(names), "events": checked, "refused": len(refused), "first": refused[:5]}


def _apply_policies(
    policies: PolicyBook, policy_events: list[RecordedEvent], applied: int, before: int
) -> int:
    """Set the policies recorded before position `before`; how many are applied now."""
    while applied < len(policy_events) and policy_events[applied].position < before:
        policy = policy_events[applied]
        assert isinstance(policy.event, ev.PolicySet)
        policies.set(policy.event.risk_tier, policy.event.policy, policy.version)
        applied += 1
    return applied
