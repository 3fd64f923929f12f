"""Job deciders: what a job request must name, and which events a job's outcome becomes.

Workers compute; these decide what is recorded. A job's result events are appended with ids
derived from the job id (see `result_ids`), so a retried job cannot record its outcome twice.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.decide import register_version, require_model, require_version
from domain.deploy import drift_action
from domain.errors import Conflict, InvalidInput
from domain.policy import Policy
from domain.state import ModelState

_NAMESPACE = uuid.UUID("5b0f8a52-7f7e-4c2b-9d43-1f6f3c1d2e7a")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NEEDS_VERSION = ("compile", "compliance")
_NEEDS_DATASET = ("train", "compliance")
_SEVERITY = {"info": 0, "warning": 1, "critical": 2}


class RequestJob(msgspec.Struct, frozen=True, kw_only=True):
    """Ask for a job on a model (and a version, for the kinds that need one)."""

    kind: ev.JobKind
    version: int | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


def result_ids(job_id: str, purpose: str, count: int) -> list[uuid.UUID]:
    """Event ids fixed by the job and what is recorded: a second attempt's append is a replay."""
    return [uuid.uuid5(_NAMESPACE, f"{job_id}/{purpose}/{i}") for i in range(count)]


def child_job_id(job_id: str, kind: str) -> str:
    """The id of the job a job requests (train → compile): the same on every attempt."""
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/{kind}"))


def request_job(
    state: ModelState | None, name: str, command: RequestJob, *, job_id: str
) -> list[ev.Event]:
    """A job request, checked against what the model holds now."""
    model = require_model(name, state)
    params = dict(command.params)
    if command.kind == "train" and command.version is not None:
        raise InvalidInput("a train job registers a new version: omit version", field="version")
    if command.kind in _NEEDS_VERSION and command.version is None:
        raise InvalidInput(f"a {command.kind} job needs a version", field="version")
    if command.version is not None:
        require_version(model, command.version)
    if command.kind in _NEEDS_DATASET:
        _require_dataset(params)
    if command.kind == "compliance" and not (
        params.get("sensitive_features") or model.sensitive_features
    ):
        raise InvalidInput(
            "no sensitive features: declare them on the model or in params.sensitive_features",
            field="params.sensitive_features",
        )
    if command.kind in ("drift", "bandit"):
        environment = str(params.setdefault("environment", "production"))
        slot = model.deployments.get(environment)
        if command.kind == "bandit" and (slot is None or slot.strategy != "bandit"):
            raise Conflict(f"no bandit experiment runs in {environment}")
        if (
            command.kind == "drift"
            and command.version is None
            and (slot is None or slot.champion is None)
        ):
            raise Conflict(f"nothing serves in {environment}: name the version to check")
    return [
        ev.JobRequested(
            job_id=job_id, kind=command.kind, name=name, version=command.version, params=params
        )
    ]


def _require_dataset(params: dict[str, Any]) -> None:
    digest = params.get("dataset_sha256")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise InvalidInput(
            "params.dataset_sha256 must be the sha256 of an uploaded dataset",
            field="params.dataset_sha256",
        )
    if not isinstance(params.get("target"), str):
        raise InvalidInput("params.target must name the label column", field="params.target")


def started(job: ev.JobRequested, attempt: int, worker: str) -> list[ev.Event]:
    """An attempt began."""
    return [
        ev.JobStarted(
            job_id=job.job_id, kind=job.kind, name=job.name, attempt=attempt, worker=worker
        )
    ]


def failed(
    job: ev.JobRequested,
    attempt: int,
    error: str,
    *,
    final: bool,
    details: dict[str, Any] | None = None,
) -> list[ev.Event]:
    """An attempt failed; `final` when no retry follows."""
    return [
        ev.JobFailed(
            job_id=job.job_id,
            kind=job.kind,
            name=job.name,
            attempt=attempt,
            error=error,
            final=final,
            details=details or {},
        )
    ]


def succeeded(
    job: ev.JobRequested, attempt: int, seconds: float, result: dict[str, Any]
) -> ev.JobSucceeded:
    """The closing event of a job whose domain events are appended with it."""
    return ev.JobSucceeded(
        job_id=job.job_id,
        kind=job.kind,
        name=job.name,
        attempt=attempt,
        seconds=seconds,
        result=result,
    )


def compiled(
    state: ModelState | None,
    job: ev.JobRequested,
    outcome: ev.VersionCompiled,
    *,
    policy: Policy,
    attempt: int,
    seconds: float,
) -> list[ev.Event]:
    """A certified library makes the version `compiled`; one out of tolerance fails the job."""
    require_version(require_model(job.name, state), outcome.version)
    summary = {
        "library_sha256": outcome.library_sha256,
        "max_abs_diff": outcome.max_abs_diff,
        "rows_checked": outcome.rows_checked,
        "tolerance": policy.max_parity_abs_diff,
    }
    if not outcome.max_abs_diff <= policy.max_parity_abs_diff:  # NaN fails too
        error = (
            f"parity: the compiled library differs from the model by {outcome.max_abs_diff:g} "
            f"> {policy.max_parity_abs_diff:g} on {outcome.rows_checked} rows"
        )
        return failed(job, attempt, error, final=True, details=summary)
    return [outcome, succeeded(job, attempt, seconds, summary)]


def compliance_checked(
    state: ModelState | None,
    job: ev.JobRequested,
    outcome: ev.ComplianceChecked,
    *,
    attempt: int,
    seconds: float,
    details: dict[str, Any] | None = None,
) -> list[ev.Event]:
    """The fairness check and its verdict (a failed check is a result, not a failed job)."""
    require_version(require_model(job.name, state), outcome.version)
    result = {"passed": outcome.passed, "report_sha256": outcome.report_sha256, **(details or {})}
    return [outcome, succeeded(job, attempt, seconds, result)]


def drift_checked(
    state: ModelState | None,
    job: ev.JobRequested,
    check: ev.DriftChecked,
    alerts: list[ev.DriftDetected],
    *,
    attempt: int,
    seconds: float,
) -> list[ev.Event]:
    """The check, an alert per feature at warning or worse, and the job's close."""
    require_version(require_model(job.name, state), check.version)
    result = {
        "severity": check.severity,
        "alerts": len(alerts),
        "report_sha256": check.report_sha256,
    }
    return [check, *alerts, succeeded(job, attempt, seconds, result)]


def worst_alert(alerts: list[ev.DriftDetected]) -> ev.DriftDetected | None:
    """The alert the policy acts on: the most severe, first of equals."""
    return max(alerts, key=lambda a: _SEVERITY[a.severity], default=None)


def drift_response(
    state: ModelState | None, name: str, alert: ev.DriftDetected, policy: Policy
) -> list[ev.Event]:
    """What the policy does about a job's worst alert (appended with the alert as cause)."""
    return drift_action(require_model(name, state), alert, policy)


def bandit_updated(
    state: ModelState | None,
    job: ev.JobRequested,
    update: ev.BanditUpdated,
    conclusion: ev.ExperimentConcluded | None,
    *,
    attempt: int,
    seconds: float,
) -> list[ev.Event]:
    """New posteriors and allocation, the conclusion when one was reached, and the close."""
    model = require_model(job.name, state)
    slot = model.deployments.get(update.environment)
    if slot is None or slot.strategy != "bandit":
        raise Conflict(f"the bandit experiment in {update.environment} has ended")
    result = {
        "probability_to_beat": update.probability_to_beat,
        "concluded": conclusion is not None,
        "winner": conclusion.winner if conclusion is not None else None,
    }
    tail = [conclusion] if conclusion is not None else []
    return [update, *tail, succeeded(job, attempt, seconds, result)]


def trained(
    state: ModelState | None,
    job: ev.JobRequested,
    command: cmd.RegisterVersion,
    *,
    compile_params: dict[str, Any],
    attempt: int,
    seconds: float,
) -> list[ev.Event]:
    """The trained version with its lineage, its compile request, and the job's close."""
    compile_job = child_job_id(job.job_id, "compile")
    registered, request = register_version(state, job.name, command, job_id=compile_job)
    assert isinstance(registered, ev.VersionRegistered)
    assert isinstance(request, ev.JobRequested)
    events = [registered, msgspec.structs.replace(request, params=dict(compile_params))]
    result = {
        "version": registered.version,
        "artifact_sha256": registered.artifact_sha256,
        "compile_job_id": compile_job,
        "metrics": dict(registered.metrics),
    }
    return [*events, succeeded(job, attempt, seconds, result)]
