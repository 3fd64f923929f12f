"""One decider for every command: `decide(command, state, facts) -> events`, pure.

The application handles every command the same way (read the target stream, fold it,
decide, append); what differs between commands lives here: which stream a command targets,
whether its decision reads the policy, and which event ids its events get (a job's are
fixed by the job, so a second attempt at recording an outcome is a replay).
"""

from __future__ import annotations

import uuid

from domain import commands as cmd
from domain import datasets, deploy, experiments, jobs, retraining
from domain import decide as d
from domain.datasets import DatasetState
from domain.events import Event
from domain.state import ModelState

# commands whose decision reads the policy of the model's risk tier
_READS_POLICY = (
    cmd.DecideVersion,
    cmd.ChangeDeployments,
    cmd.RespondToDrift,
    cmd.RespondToPerformance,
    cmd.RespondWithRetraining,
    cmd.RecordJobOutcome,
    cmd.AmendPolicy,
    cmd.StartExperiment,
)


def stream_of(command: cmd.Command) -> str:
    """The stream a command is decided on and appended to."""
    match command:
        case cmd.SetPolicy(tier=tier) | cmd.AmendPolicy(tier=tier):
            return d.policy_stream(tier)
        case cmd.StartAttempt(job=job) | cmd.FailAttempt(job=job) | cmd.RecordJobOutcome(job=job):
            return d.model_stream(job.name)
        case cmd.AddDatasetVersion(name=name):
            return datasets.dataset_stream(name)
        case _:
            return d.model_stream(command.name)


def reads_policy(command: cmd.Command) -> bool:
    """Whether `decide` needs the policy of the model's tier (or, amending a policy, of the
    tier amended) in its facts."""
    return isinstance(command, _READS_POLICY)


def decide(  # noqa: PLR0912 - a case per command
    command: cmd.Command,
    state: ModelState | None,
    facts: cmd.Facts,
    dataset: DatasetState | None = None,
) -> list[Event]:
    """The events a command becomes on `state` (a dataset's command: on `dataset`); raises a
    domain error when it cannot."""
    match command:
        case cmd.AddDatasetVersion():
            return datasets.add_version(command, dataset)
        case cmd.SetRetrainingPolicy():
            return retraining.set_policy(command, state)
        case cmd.RespondWithRetraining():
            return retraining.respond(command, state, facts)
        case cmd.RegisterModel():
            return d.register_model(command, state)
        case cmd.UpdateModel():
            return d.update_model(command, state)
        case cmd.RegisterVersion():
            return d.register_version(command, state)
        case cmd.DecideVersion():
            return d.decide_approval(command, state, facts)
        case cmd.RevokeDecision():
            return d.revoke_approval(command, state)
        case cmd.RetireVersion():
            return d.retire(command, state)
        case cmd.ChangeDeployments():
            return deploy.promote(command, state, facts)
        case cmd.Rollback():
            return deploy.rollback(command, state)
        case cmd.RaiseDriftAlert():
            return d.raise_drift_alert(command, state)
        case cmd.RespondToDrift(name=name, alert=alert):
            return deploy.drift_action(d.require_model(name, state), alert, facts.policy)
        case cmd.RespondToPerformance(name=name, alert=alert):
            model = d.require_model(name, state)
            return deploy.performance_action(model, alert, facts.policy)
        case cmd.SetPolicy():
            return d.set_policy(command)
        case cmd.AmendPolicy():
            return d.amend_policy(command, facts)
        case cmd.StartExperiment():
            return experiments.start(command, state, facts)
        case cmd.EndBreachingChallenger():
            return experiments.end_breaching_challenger(command, state)
        case cmd.RequestJob():
            return jobs.request_job(command, state)
        case cmd.StartAttempt():
            return jobs.started(command)
        case cmd.FailAttempt():
            return jobs.failed(command)
        case cmd.RecordJobOutcome():
            return jobs.record_outcome(command, state, facts)


def event_ids(command: cmd.Command, count: int) -> list[uuid.UUID] | None:
    """Ids fixed by the command for its `count` events, or None for fresh ones."""
    match command:
        case cmd.StartAttempt() | cmd.FailAttempt() | cmd.RecordJobOutcome():
            return jobs.outcome_ids(command, count)
        case cmd.RespondToDrift(alert=alert) | cmd.RespondToPerformance(alert=alert) if (
            alert.job_id is not None
        ):
            return jobs.result_ids(alert.job_id, "response", count)
        case cmd.RespondWithRetraining(alert=alert, alert_event_id=alert_event_id):
            return retraining.decision_ids(retraining.trigger_key(alert, alert_event_id), count)
        case cmd.EndBreachingChallenger(ended=ended) if ended.job_id is not None:
            return jobs.result_ids(ended.job_id, "guardrail-stop", count)
    return None
