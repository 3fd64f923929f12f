"""A model's state, folded from its stream: `evolve(state, event, context) -> state`.

`evolve` updates the state it is given (folds over thousands of events should not copy
every version each step); decode a fresh copy when an older state must be kept.
"""

from __future__ import annotations

from typing import Any

from domain import events as ev
from domain import retraining_fold
from domain.state import (
    Compiled,
    Compliance,
    Decision,
    Deployment,
    DriftAlert,
    EventContext,
    Experiment,
    ModelState,
    VersionState,
)


def evolve(state: ModelState | None, event: ev.AnyEvent, ctx: EventContext) -> ModelState | None:
    """Apply one event of a model's stream."""
    if isinstance(event, ev.ModelRegistered):
        return ModelState(
            name=event.name,
            risk_tier=event.risk_tier,
            description=event.description,
            owner=event.owner,
            tags=list(event.tags),
            sensitive_features=list(event.sensitive_features),
            registered_at=ctx.recorded_at,
            registered_by=ctx.actor,
            updated_position=ctx.position,
            stream_version=ctx.stream_version,
        )
    if state is None:
        return None
    state.updated_position = ctx.position
    state.stream_version = ctx.stream_version
    number = getattr(event, "version", None)
    if (
        isinstance(number, int)
        and number not in state.versions
        and not isinstance(event, (ev.VersionRegistered, ev.JobRequested))
    ):
        # Deciders never emit this; a fold must still survive any log it is given.
        return state
    _APPLY.get(type(event), _ignore)(state, event, ctx)
    return state


def _ignore(state: ModelState, event: Any, ctx: EventContext) -> None:
    """Events a model's state does not track (jobs are a view of their own)."""


def _updated(state: ModelState, event: ev.ModelUpdated, _ctx: EventContext) -> None:
    if event.description is not None:
        state.description = event.description
    if event.owner is not None:
        state.owner = event.owner
    if event.tags is not None:
        state.tags = list(event.tags)
    if event.sensitive_features is not None:
        state.sensitive_features = list(event.sensitive_features)


def _version(state: ModelState, event: ev.VersionRegistered, ctx: EventContext) -> None:
    state.versions[event.version] = VersionState(
        version=event.version,
        artifact_sha256=event.artifact_sha256,
        artifact_size=event.artifact_size,
        format=event.format,
        feature_names=list(event.feature_names),
        metrics=dict(event.metrics),
        params=dict(event.params),
        lineage=event.lineage,
        num_trees=event.num_trees,
        registered_at=ctx.recorded_at,
        registered_by=ctx.actor,
    )


def _job(state: ModelState, event: ev.JobRequested, ctx: EventContext) -> None:
    version = state.versions.get(event.version or 0)
    if version is not None and ctx.actor not in version.requested_by:
        version.requested_by.append(ctx.actor)


def _compiled(state: ModelState, event: ev.VersionCompiled, ctx: EventContext) -> None:
    state.versions[event.version].compiled = Compiled(
        library_sha256=event.library_sha256,
        max_abs_diff=event.max_abs_diff,
        rows_checked=event.rows_checked,
        compiler=event.compiler,
        flags=list(event.flags),
        compile_seconds=event.compile_seconds,
        recorded_at=ctx.recorded_at,
        max_scaled_diff=event.max_scaled_diff,
        reference=event.reference,
    )


def _compliance(state: ModelState, event: ev.ComplianceChecked, ctx: EventContext) -> None:
    state.versions[event.version].compliance = Compliance(
        passed=event.passed,
        report_sha256=event.report_sha256,
        policy_version=event.policy_version,
        metrics=dict(event.metrics),
        recorded_at=ctx.recorded_at,
    )


def _approved(state: ModelState, event: ev.VersionApproved, ctx: EventContext) -> None:
    state.versions[event.version].decisions.append(
        Decision(
            approver=event.approver,
            decision="approve",
            comment=event.comment,
            policy_version=event.policy_version,
            artifact_sha256=event.artifact_sha256,
            library_sha256=event.library_sha256,
            report_sha256s=list(event.report_sha256s),
            expires_at=event.expires_at,
            recorded_at=ctx.recorded_at,
            position=ctx.position,
        )
    )


def _rejected(state: ModelState, event: ev.VersionRejected, ctx: EventContext) -> None:
    state.versions[event.version].decisions.append(
        Decision(
            approver=event.approver,
            decision="reject",
            comment=event.comment,
            policy_version=event.policy_version,
            artifact_sha256=None,
            library_sha256=None,
            report_sha256s=[],
            expires_at=None,
            recorded_at=ctx.recorded_at,
            position=ctx.position,
        )
    )


def _revoked(state: ModelState, event: ev.ApprovalRevoked, _ctx: EventContext) -> None:
    for decision in state.versions[event.version].decisions:
        if decision.approver == event.approver and not decision.revoked:
            decision.revoked = True
            decision.revoked_reason = event.reason


def _deployment(state: ModelState, event: ev.DeploymentChanged, ctx: EventContext) -> None:
    slot = state.deployments.setdefault(event.environment, Deployment())
    if event.action == "rollback":
        # a rollback that keeps the champion ended the challenger: that is the bad version
        if event.champion == slot.champion and slot.challenger is not None:
            slot.rolled_back.append(slot.challenger)
        elif slot.champion is not None:
            slot.rolled_back.append(slot.champion)
    if event.champion is not None and event.champion != slot.champion:
        slot.champion_history.append(event.champion)
    if event.strategy != "bandit" or (event.champion, event.challenger) != (
        slot.champion,
        slot.challenger,
    ):
        slot.arms = []  # a new experiment (or none) starts from the prior
    if slot.experiment is not None and (event.champion, event.challenger) != (
        slot.champion,
        slot.challenger,
    ):
        _stopped(
            state, slot.experiment, f"{event.action} of version {event.version}: {event.reason}"
        )
        slot.experiment = None
    slot.champion = event.champion
    slot.challenger = event.challenger
    slot.strategy = event.strategy
    slot.traffic_percent = event.traffic_percent
    slot.action = event.action
    slot.reason = event.reason
    slot.updated_at = ctx.recorded_at
    slot.updated_by = ctx.actor
    slot.position = ctx.position


def _bandit(state: ModelState, event: ev.BanditUpdated, _ctx: EventContext) -> None:
    slot = state.deployments.get(event.environment)
    if slot is not None and slot.strategy == "bandit":
        slot.arms = list(event.arms)


def _experiment_started(state: ModelState, event: ev.ExperimentStarted, ctx: EventContext) -> None:
    state.experiments[event.experiment_id] = Experiment(
        started=event, started_at=ctx.recorded_at, started_by=ctx.actor, position=ctx.position
    )
    state.deployments.setdefault(event.environment, Deployment()).experiment = event.experiment_id


def _experiment_updated(state: ModelState, event: ev.ExperimentUpdated, _: EventContext) -> None:
    experiment = state.experiments.get(event.experiment_id)
    if experiment is not None:
        experiment.latest = event
        experiment.updates += 1


def _experiment_ended(state: ModelState, event: ev.ExperimentEnded, ctx: EventContext) -> None:
    experiment = state.experiments.get(event.experiment_id)
    if experiment is None or experiment.status != "running":
        return
    experiment.status, experiment.ended, experiment.ended_at = event.outcome, event, ctx.recorded_at
    slot = state.deployments.get(event.environment)
    if slot is not None and slot.experiment == event.experiment_id:
        slot.experiment = None


def _stopped(state: ModelState, experiment_id: str, reason: str) -> None:
    """The deployment under a running experiment changed: it stops without a conclusion."""
    experiment = state.experiments.get(experiment_id)
    if experiment is not None and experiment.status == "running":
        experiment.status, experiment.stopped_reason = "stopped", reason


def _retired(state: ModelState, event: ev.VersionRetired, ctx: EventContext) -> None:
    version = state.versions[event.version]
    version.retired_at = ctx.recorded_at
    version.retired_reason = event.reason


def _drift(state: ModelState, event: ev.DriftDetected, ctx: EventContext) -> None:
    state.drift_alerts.append(
        DriftAlert(
            version=event.version,
            statistic=event.statistic,
            value=event.value,
            threshold=event.threshold,
            severity=event.severity,
            feature=event.feature,
            environment=event.environment,
            recorded_at=ctx.recorded_at,
            position=ctx.position,
        )
    )


_APPLY: dict[type, Any] = {
    ev.ModelUpdated: _updated,
    ev.VersionRegistered: _version,
    ev.JobRequested: _job,
    ev.VersionCompiled: _compiled,
    ev.ComplianceChecked: _compliance,
    ev.VersionApproved: _approved,
    ev.VersionRejected: _rejected,
    ev.ApprovalRevoked: _revoked,
    ev.DeploymentChanged: _deployment,
    ev.VersionRetired: _retired,
    ev.DriftDetected: _drift,
    ev.BanditUpdated: _bandit,
    ev.ExperimentStarted: _experiment_started,
    ev.ExperimentUpdated: _experiment_updated,
    ev.ExperimentEnded: _experiment_ended,
    **retraining_fold.EVOLVE,
}
