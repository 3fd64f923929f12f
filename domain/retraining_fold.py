"""How a model's state folds its retraining events: the policy in force and each decision."""

from __future__ import annotations

from typing import Any

from domain import events as ev
from domain.state import EventContext, ModelState, RetrainingDecision


def _policy_set(state: ModelState, event: ev.RetrainingPolicySet, ctx: EventContext) -> None:
    state.retraining = event.policy
    state.retraining_position = ctx.position
    state.retraining_set_by = ctx.actor
    state.retraining_set_at = ctx.recorded_at


def _triggered(state: ModelState, event: ev.RetrainingTriggered, ctx: EventContext) -> None:
    state.retrainings.append(
        RetrainingDecision(
            key=event.alert_job_id or event.alert_event_id,
            alert_event_id=event.alert_event_id,
            trigger=event.trigger,
            alert_version=event.alert_version,
            outcome="triggered",
            reason=event.reason,
            recorded_at=ctx.recorded_at,
            position=ctx.position,
            job_id=event.job_id,
            parent_version=event.parent_version,
            dataset=event.dataset,
            dataset_version=event.dataset_version,
            dataset_sha256=event.dataset_sha256,
        )
    )


def _skipped(state: ModelState, event: ev.RetrainingSkipped, ctx: EventContext) -> None:
    state.retrainings.append(
        RetrainingDecision(
            key=event.alert_job_id or event.alert_event_id,
            alert_event_id=event.alert_event_id,
            trigger=event.trigger,
            alert_version=event.alert_version,
            outcome="skipped",
            reason=event.reason,
            recorded_at=ctx.recorded_at,
            position=ctx.position,
        )
    )


EVOLVE: dict[type, Any] = {
    ev.RetrainingPolicySet: _policy_set,
    ev.RetrainingTriggered: _triggered,
    ev.RetrainingSkipped: _skipped,
}
