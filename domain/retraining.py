"""Retraining on policy: a model's retraining policy, and what it does about an alert.

A critical drift or performance alert of a model whose policy covers it requests one train
job on the latest version of the policy's named dataset, with the parameters of the version
serving where the alert was raised. The train job registers the new version (lineage: the
alert, the dataset version, the parent version), which is compiled and, where the tier
requires it, checked for fairness; then it waits for approvals like any other version.
Nothing here deploys.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from domain import commands as cmd
from domain import events as ev
from domain.decide import require_model, require_version
from domain.errors import InvalidInput
from domain.policy import Policy, RetrainingPolicy
from domain.state import ModelState, VersionState

_NAMESPACE = uuid.UUID("0b7e3c9e-4f0a-4d55-8a51-3d2b8f6e2c14")
_DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_TRAINERS = {"lightgbm": "lightgbm", "sklearn-skops": "sklearn"}
# recorded by training about the version, not parameters of the next training
_NOT_PARAMS = ("kind", "seed", "target", "categories")


def trigger_key(alert: ev.DriftDetected | ev.PerformanceAlert, alert_event_id: str) -> str:
    """What one retraining decision is made for: the check that raised the alert (one drift
    check raises an alert per feature), else the alert itself."""
    return alert.job_id or alert_event_id


def decision_ids(key: str, count: int) -> list[uuid.UUID]:
    """Event ids fixed by the trigger: a second decision about it (another process, a
    restart before the reactor's checkpoint moved) is a replay of the first."""
    return [uuid.uuid5(_NAMESPACE, f"{key}/retraining/{i}") for i in range(count)]


def train_job_id(key: str) -> str:
    """The id of the train job a trigger requests."""
    return str(uuid.uuid5(_NAMESPACE, f"{key}/retraining/train"))


def set_policy(command: cmd.SetRetrainingPolicy, state: ModelState | None) -> list[ev.Event]:
    """A model's retraining policy; nothing if it is the one in force."""
    model = require_model(command.name, state)
    policy = command.policy
    for field, name in (
        ("dataset", policy.dataset),
        ("evaluation_dataset", policy.evaluation_dataset),
    ):
        if name is not None and not _DATASET_NAME.match(name):
            raise InvalidInput(
                f"{field} must name a dataset (1-100 of a-z, 0-9, '.', '_', '-')", field=field
            )
    if not policy.triggers:
        raise InvalidInput("triggers must name drift, performance or both", field="triggers")
    if not policy.environments or not all(_ENVIRONMENT.match(e) for e in policy.environments):
        raise InvalidInput(
            "environments must name 1-40 of a-z, 0-9, '_', '-'", field="environments"
        )
    if not 0 <= policy.cooldown_hours <= 24 * 365:
        raise InvalidInput("cooldown_hours must be within [0, 8760]", field="cooldown_hours")
    if model.retraining == policy:
        return []
    return [ev.RetrainingPolicySet(name=command.name, policy=policy)]


def respond(
    command: cmd.RespondWithRetraining, state: ModelState | None, facts: cmd.Facts
) -> list[ev.Event]:
    """A train job for a critical alert the policy covers, a recorded skip when the policy
    covers it but cannot retrain now, else nothing."""
    model = require_model(command.name, state)
    alert, policy = command.alert, model.retraining
    trigger: ev.RetrainingTrigger = (
        "drift" if isinstance(alert, ev.DriftDetected) else "performance"
    )
    if (
        policy is None
        or not policy.enabled
        or alert.severity != "critical"
        or trigger not in policy.triggers
        or (alert.environment is not None and alert.environment not in policy.environments)
        or command.alert_position <= model.retraining_position  # raised before the policy
    ):
        return []
    key = trigger_key(alert, command.alert_event_id)
    if any(d.key == key for d in model.retrainings):
        return []  # decided for another alert of the same check
    parent = _parent(model, alert)
    why_not = _why_not(model, policy, parent, command, facts)

    def skipped(reason: str) -> list[ev.Event]:
        return [
            ev.RetrainingSkipped(
                name=model.name,
                alert_event_id=command.alert_event_id,
                trigger=trigger,
                alert_version=alert.version,
                reason=reason,
                alert_job_id=alert.job_id,
            )
        ]

    if why_not is not None:
        return skipped(why_not)
    dataset = command.datasets[policy.dataset]
    target = _target(policy, parent)
    assert target is not None
    compliance, note = _compliance(model, policy, command, target, facts.policy)
    job_id = train_job_id(key)
    params: dict[str, Any] = {
        **_training_params(parent),
        "dataset_sha256": dataset.sha256,
        "target": target,
        "retraining": {
            "triggered_by": command.alert_event_id,
            "parent_version": parent.version,
            "dataset": dataset.name,
            "dataset_version": dataset.dataset_version,
        },
    }
    if compliance is not None:
        params["compliance"] = compliance
    return [
        ev.RetrainingTriggered(
            name=model.name,
            alert_event_id=command.alert_event_id,
            trigger=trigger,
            alert_version=alert.version,
            parent_version=parent.version,
            dataset=dataset.name,
            dataset_version=dataset.dataset_version,
            dataset_sha256=dataset.sha256,
            job_id=job_id,
            alert_job_id=alert.job_id,
            evaluation_dataset_sha256=None if compliance is None else compliance["dataset_sha256"],
            reason=f"critical {trigger} alert on version {alert.version}{note}",
        ),
        ev.JobRequested(job_id=job_id, kind="train", name=model.name, params=params),
    ]


def _parent(model: ModelState, alert: ev.DriftDetected | ev.PerformanceAlert) -> VersionState:
    """The version whose parameters are trained with: the champion of the alert's environment
    (what serves there now, a demoted canary's champion too), else the alerted version."""
    alerted = require_version(model, alert.version)
    slot = model.deployments.get(alert.environment or "")
    champion = slot.champion if slot is not None else None
    return model.versions[champion] if champion is not None else alerted


def _why_not(
    model: ModelState,
    policy: RetrainingPolicy,
    parent: VersionState,
    command: cmd.RespondWithRetraining,
    facts: cmd.Facts,
) -> str | None:
    last = next((d for d in reversed(model.retrainings) if d.outcome == "triggered"), None)
    if last is not None and facts.now < last.recorded_at + timedelta(hours=policy.cooldown_hours):
        return (
            f"retraining job {last.job_id} was requested at {last.recorded_at.isoformat()}, "
            f"within the cooldown of {policy.cooldown_hours:g} h"
        )
    if policy.dataset not in command.datasets:
        return f"the dataset {policy.dataset!r} has no version: upload one under that name"
    if parent.format not in _TRAINERS:
        return (
            f"version {parent.version} is {parent.format}: only LightGBM and scikit-learn "
            "versions are retrained"
        )
    if _target(policy, parent) is None:
        return f"version {parent.version} records no target: name one in the retraining policy"
    return None


def _target(policy: RetrainingPolicy, parent: VersionState) -> str | None:
    recorded = parent.lineage.target or parent.params.get("target")
    return policy.target or (recorded if isinstance(recorded, str) else None)


def _compliance(
    model: ModelState,
    policy: RetrainingPolicy,
    command: cmd.RespondWithRetraining,
    target: str,
    tier: Policy,
) -> tuple[dict[str, Any] | None, str]:
    """The fairness check the new version gets, when the tier requires one, and a note on
    why it gets none when it needs one."""
    if not tier.compliance_required:
        return None, ""
    if policy.evaluation_dataset is None:
        return None, "; the tier requires compliance but the policy names no evaluation dataset"
    evaluation = command.datasets.get(policy.evaluation_dataset)
    if evaluation is None:
        return None, f"; the evaluation dataset {policy.evaluation_dataset!r} has no version"
    if not model.sensitive_features:
        return None, "; the model declares no sensitive features to check fairness by"
    return {"dataset_sha256": evaluation.sha256, "target": target}, ""


def _training_params(parent: VersionState) -> dict[str, Any]:
    """The train job's options from the parent version: its trainer, seed and parameters,
    on its features (so the new version takes the same inputs)."""
    params = dict(parent.params)
    seed = params.get("seed", 0)
    model_params = {k: v for k, v in params.items() if k not in _NOT_PARAMS}
    model_params.setdefault("features", list(parent.feature_names))
    return {
        "trainer": _TRAINERS[parent.format],
        "seed": seed if isinstance(seed, int) else 0,
        "params": model_params,
    }
