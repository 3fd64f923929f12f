"""Job deciders: what a job request must name, and which events a job's outcome becomes.

Workers compute; these decide what is recorded. A job's result events are appended with ids
derived from the job id (see `result_ids`), so a retried job cannot record its outcome twice.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from domain import commands as cmd
from domain import events as ev
from domain import experiments
from domain.decide import register_version, require_model, require_version
from domain.deploy import settle_experiment
from domain.errors import Conflict, InvalidInput
from domain.state import ModelState

_NAMESPACE = uuid.UUID("5b0f8a52-7f7e-4c2b-9d43-1f6f3c1d2e7a")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NEEDS_VERSION = ("compile", "compliance")
_NEEDS_DATASET = ("train", "compliance")
# checks of what a deployment serves: of the version named, else of what serves there
_WATCHES = ("performance", "data_quality")


def result_ids(job_id: str, purpose: str, count: int) -> list[uuid.UUID]:
    """Event ids fixed by the job and what is recorded: a second attempt's append is a replay."""
    return [uuid.uuid5(_NAMESPACE, f"{job_id}/{purpose}/{i}") for i in range(count)]


def child_job_id(job_id: str, kind: str) -> str:
    """The id of the job a job requests (train → compile): the same on every attempt."""
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/{kind}"))


def request_job(command: cmd.RequestJob, state: ModelState | None) -> list[ev.Event]:
    """A job request, checked against what the model holds now."""
    name, job_id = command.name, command.job_id
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
    if "retraining" in params:
        raise InvalidInput(
            "params.retraining is recorded by a model's retraining policy only",
            field="params.retraining",
        )
    if command.kind == "train" and "compliance" in params:
        _require_compliance(params["compliance"], model.sensitive_features)
    if command.kind == "compliance" and not (
        params.get("sensitive_features") or model.sensitive_features
    ):
        raise InvalidInput(
            "no sensitive features: declare them on the model or in params.sensitive_features",
            field="params.sensitive_features",
        )
    if command.kind == "experiment":
        experiment_id = params.get("experiment_id")
        if not isinstance(experiment_id, str):
            raise InvalidInput("params.experiment_id must name the experiment", field="params")
        experiments.require_running(model, experiment_id)
    if command.kind in ("drift", "bandit", *_WATCHES):
        environment = str(params.setdefault("environment", "production"))
        slot = model.deployments.get(environment)
        if command.kind == "bandit" and (slot is None or slot.strategy != "bandit"):
            raise Conflict(f"no bandit experiment runs in {environment}")
        if (
            command.kind in ("drift", *_WATCHES)
            and command.version is None
            and (slot is None or slot.champion is None)
        ):
            raise Conflict(f"nothing serves in {environment}: name the version to check")
    return [
        ev.JobRequested(
            job_id=job_id, kind=command.kind, name=name, version=command.version, params=params
        )
    ]


def _require_dataset(params: dict[str, Any], where: str = "params") -> None:
    digest = params.get("dataset_sha256")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise InvalidInput(
            f"{where}.dataset_sha256 must be the sha256 of an uploaded dataset",
            field=f"{where}.dataset_sha256",
        )
    if not isinstance(params.get("target"), str):
        raise InvalidInput(f"{where}.target must name the label column", field=f"{where}.target")


def _require_compliance(check: object, sensitive: list[str]) -> None:
    """A train job may name the fairness check its version gets: a dataset and its target."""
    if not isinstance(check, dict):
        raise InvalidInput("params.compliance must be an object", field="params.compliance")
    _require_dataset(check, "params.compliance")
    if not (check.get("sensitive_features") or sensitive):
        raise InvalidInput(
            "no sensitive features: declare them on the model or in "
            "params.compliance.sensitive_features",
            field="params.compliance.sensitive_features",
        )


def started(command: cmd.StartAttempt) -> list[ev.Event]:
    """An attempt began."""
    job = command.job
    return [
        ev.JobStarted(
            job_id=job.job_id,
            kind=job.kind,
            name=job.name,
            attempt=command.attempt,
            worker=command.worker,
        )
    ]


def failed(command: cmd.FailAttempt) -> list[ev.Event]:
    """An attempt failed; final when no retry follows."""
    job = command.job
    return [
        ev.JobFailed(
            job_id=job.job_id,
            kind=job.kind,
            name=job.name,
            attempt=command.attempt,
            error=command.error,
            final=command.final,
            details=dict(command.details),
        )
    ]


def record_outcome(
    command: cmd.RecordJobOutcome, state: ModelState | None, facts: cmd.Facts
) -> list[ev.Event]:
    """What a job's outcome records: its domain events and the job's close."""
    job = command.job
    model = require_model(job.name, state)
    match command.outcome:
        case cmd.Compiled(library=library):
            version = require_version(model, library.version)
            return _compiled(command, library, facts.policy.parity_tolerance(version.format))
        case cmd.ComplianceReported(check=check, details=details):
            require_version(model, check.version)
            result = {"passed": check.passed, "report_sha256": check.report_sha256, **details}
            return [check, _succeeded(command, result)]
        case cmd.DriftReported(check=check, alerts=alerts):
            require_version(model, check.version)
            result = {
                "severity": check.severity,
                "alerts": len(alerts),
                "report_sha256": check.report_sha256,
            }
            return [check, *alerts, _succeeded(command, result)]
        case cmd.PerformanceReported(check=check, alerts=alerts):
            require_version(model, check.version)
            result = {"severity": check.severity, "alerts": len(alerts), "rows": check.rows}
            return [check, *alerts, _succeeded(command, result)]
        case cmd.DataQualityReported(check=check, alerts=alerts):
            require_version(model, check.version)
            result = {"severity": check.severity, "alerts": len(alerts), "rows": check.rows}
            return [check, *alerts, _succeeded(command, result)]
        case cmd.BanditReported(update=update, conclusion=conclusion):
            return _bandit_updated(command, model, update, conclusion, facts)
        case cmd.Trained(version=version):
            return _trained(command, state, version)
        case cmd.ExperimentReported() as reported:
            recorded = experiments.record(model, reported)
            ended = reported.ended
            result = {
                "p_value": reported.update.p_value,
                "effect": reported.update.effect,
                "outcome": ended.outcome if ended is not None else None,
                "winner": ended.winner if ended is not None else None,
            }
            return [*recorded, _succeeded(command, result)]


def outcome_ids(
    command: cmd.StartAttempt | cmd.FailAttempt | cmd.RecordJobOutcome, count: int
) -> list[uuid.UUID]:
    """The ids of what a job records: a second attempt at recording it is a replay."""
    match command:
        case cmd.StartAttempt(attempt=attempt):
            purpose = f"attempt-{attempt}-started"
        case cmd.FailAttempt(attempt=attempt, final=False):
            purpose = f"attempt-{attempt}-failed"
        case _:
            purpose = "result"
    return result_ids(command.job.job_id, purpose, count)


def _succeeded(command: cmd.RecordJobOutcome, result: dict[str, Any]) -> ev.JobSucceeded:
    job = command.job
    return ev.JobSucceeded(
        job_id=job.job_id,
        kind=job.kind,
        name=job.name,
        attempt=command.attempt,
        seconds=command.seconds,
        result=result,
    )


def _compiled(
    command: cmd.RecordJobOutcome, library: ev.VersionCompiled, tolerance: float
) -> list[ev.Event]:
    """A certified library makes the version `compiled`; one out of tolerance fails the job."""
    measured = library.max_abs_diff if library.max_scaled_diff is None else library.max_scaled_diff
    summary = {
        "library_sha256": library.library_sha256,
        "max_abs_diff": library.max_abs_diff,
        "max_scaled_diff": library.max_scaled_diff,
        "reference": library.reference,
        "rows_checked": library.rows_checked,
        "tolerance": tolerance,
    }
    if not measured <= tolerance:  # NaN fails too
        against = f" ({library.reference})" if library.reference else ""
        error = (
            f"parity: the compiled library differs from the model{against} by {measured:g} "
            f"> {tolerance:g} on {library.rows_checked} rows"
        )
        return failed(
            cmd.FailAttempt(
                job=command.job, attempt=command.attempt, error=error, final=True, details=summary
            )
        )
    return [library, _succeeded(command, summary)]


def _bandit_updated(
    command: cmd.RecordJobOutcome,
    model: ModelState,
    update: ev.BanditUpdated,
    conclusion: ev.ExperimentConcluded | None,
    facts: cmd.Facts,
) -> list[ev.Event]:
    """New posteriors and allocation, and the job's close; a conclusion also settles the
    deployment on the winner, so an experiment concludes once: after it, none runs."""
    slot = model.deployments.get(update.environment)
    if slot is None or slot.strategy != "bandit" or slot.challenger is None:
        raise Conflict(f"the bandit experiment in {update.environment} has ended")
    arms = {slot.champion, slot.challenger}
    stale = update.champion != slot.champion or {arm.version for arm in update.arms} != arms
    if stale or (conclusion is not None and conclusion.winner not in arms):
        raise Conflict(f"the bandit experiment in {update.environment} changed meanwhile")
    tail: list[ev.Event] = []
    champion = slot.champion
    if conclusion is not None:
        settled = settle_experiment(model, conclusion, facts)
        tail, champion = [conclusion, settled], settled.champion
    result = {
        "probability_to_beat": update.probability_to_beat,
        "concluded": conclusion is not None,
        "winner": conclusion.winner if conclusion is not None else None,
        "champion": champion,
    }
    return [update, *tail, _succeeded(command, result)]


def _trained(
    command: cmd.RecordJobOutcome, state: ModelState | None, version: cmd.RegisterVersion
) -> list[ev.Event]:
    """The trained version with its lineage, its compile request (and the fairness check the
    job names), and the job's close."""
    registered, request = register_version(version, state)
    assert isinstance(registered, ev.VersionRegistered)
    check = command.job.params.get("compliance")
    checks: list[ev.Event] = []
    if isinstance(check, dict):
        checks.append(
            ev.JobRequested(
                job_id=child_job_id(command.job.job_id, "compliance"),
                kind="compliance",
                name=registered.name,
                version=registered.version,
                params=dict(check),
            )
        )
    result = {
        "version": registered.version,
        "artifact_sha256": registered.artifact_sha256,
        "compile_job_id": version.compile_job_id,
        "metrics": dict(registered.metrics),
    }
    if checks:
        result["compliance_job_id"] = child_job_id(command.job.job_id, "compliance")
    return [registered, request, *checks, _succeeded(command, result)]
