"""A/B experiment deciders: starting one, what each look records, and how one concludes.

An experiment compares the mean feedback reward of the predictions each arm served to units
assigned by hash (see `app.scoring.routing`). Each look computes always-valid statistics
(`domain.sequential`), so it may be read as often as wanted. The policy of a look, in order:
a challenger guardrail crossed ends the challenger; a p-value at or below alpha names the
better arm the winner; both arms at the horizon without that is "no difference". A winner is
recorded, never promoted: its promotion goes through the gates and approvals. What one look
computes and concludes is `domain.looks`.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from domain import commands as cmd
from domain import events as ev
from domain.decide import require_model, require_version
from domain.deploy import promote
from domain.errors import Conflict, InvalidInput
from domain.state import Experiment, ModelState

# the power a default horizon is sized for, and its allowance for always-valid reading: a
# sequential test needs more outcomes than a fixed one for the same power
_POWER = 0.8
_SEQUENTIAL_ALLOWANCE = 2.0
_BINARY_WORST_VARIANCE = 0.25


def start(
    command: cmd.StartExperiment, state: ModelState | None, facts: cmd.Facts
) -> list[ev.Event]:
    """The experiment, after the canary promotion it needs (gated like any promotion)."""
    model = require_model(command.name, state)
    _check(command)
    challenger = require_version(model, command.challenger)
    fairness = command.guardrails.fairness
    if fairness is not None and fairness.feature not in challenger.feature_names:
        raise InvalidInput(
            f"fairness feature {fairness.feature!r} is not a feature of version "
            f"{command.challenger} ({', '.join(challenger.feature_names)})",
            field="guardrails.fairness.feature",
        )
    slot = model.deployments.get(command.environment)
    if slot is None or slot.champion != command.champion:
        serving = slot.champion if slot is not None else None
        raise Conflict(
            f"version {command.champion} is not champion in {command.environment} "
            f"(champion: {serving})"
        )
    if slot.experiment is not None:
        raise Conflict(f"experiment {slot.experiment} already runs in {command.environment}")
    events: list[ev.Event] = []
    running = (slot.challenger, slot.strategy, slot.traffic_percent) == (
        command.challenger,
        "canary",
        command.traffic_percent,
    )
    if not running:
        change = cmd.Promote(
            version=command.challenger,
            environment=command.environment,
            strategy="canary",
            traffic_percent=command.traffic_percent,
        )
        events += promote(cmd.ChangeDeployments(name=command.name, changes=[change]), state, facts)
    events.append(
        ev.ExperimentStarted(
            name=command.name,
            experiment_id=command.experiment_id,
            environment=command.environment,
            champion=command.champion,
            challenger=command.challenger,
            traffic_percent=command.traffic_percent,
            metric=command.metric,
            guardrails=command.guardrails,
            minimum_detectable_effect=command.minimum_detectable_effect,
            alpha=command.alpha,
            horizon_per_arm=command.horizon_per_arm or default_horizon(command),
            min_samples_per_arm=command.min_samples_per_arm,
        )
    )
    return events


def default_horizon(command: cmd.StartExperiment) -> int:
    """Outcomes per arm: twice the fixed-horizon size for 80% power at the MDE (binary
    metrics at the worst-case variance 0.25; continuous ones must name their horizon)."""
    if command.metric.kind != "binary":
        raise InvalidInput(
            "a continuous metric needs horizon_per_arm (its variance is unknown)",
            field="horizon_per_arm",
        )
    normal = NormalDist()
    z = normal.inv_cdf(1 - command.alpha / 2) + normal.inv_cdf(_POWER)
    fixed = 2 * z**2 * _BINARY_WORST_VARIANCE / command.minimum_detectable_effect**2
    return math.ceil(_SEQUENTIAL_ALLOWANCE * fixed)


def _check(command: cmd.StartExperiment) -> None:
    if command.champion == command.challenger:
        raise InvalidInput("champion and challenger must differ", field="challenger")
    if not 0 < command.traffic_percent < 100:
        raise InvalidInput("0 < traffic_percent < 100", field="traffic_percent")
    if not 0 < command.alpha < 0.5:
        raise InvalidInput("0 < alpha < 0.5", field="alpha")
    mde = command.minimum_detectable_effect
    ceiling = 1.0 if command.metric.kind == "binary" else math.inf
    if not (math.isfinite(mde) and 0 < mde < ceiling):
        raise InvalidInput(
            "minimum_detectable_effect must be > 0 (and < 1 for a binary metric)",
            field="minimum_detectable_effect",
        )
    if command.horizon_per_arm is not None and command.horizon_per_arm < 2:
        raise InvalidInput("horizon_per_arm must be at least 2", field="horizon_per_arm")
    if command.min_samples_per_arm < 2:
        raise InvalidInput("min_samples_per_arm must be at least 2", field="min_samples_per_arm")
    if not command.metric.name.strip():
        raise InvalidInput("the metric needs a name", field="metric.name")
    limits = (command.guardrails.max_error_rate, command.guardrails.max_p99_latency_ms)
    if any(limit is not None and not (math.isfinite(limit) and limit >= 0) for limit in limits):
        raise InvalidInput("guardrail limits must be finite and >= 0", field="guardrails")
    fairness = command.guardrails.fairness
    if fairness is not None:
        if not 0 <= fairness.max_difference <= 1:
            raise InvalidInput(
                "fairness max_difference must be within [0, 1]",
                field="guardrails.fairness.max_difference",
            )
        if not math.isfinite(fairness.threshold):
            raise InvalidInput(
                "fairness threshold must be a finite number", field="guardrails.fairness.threshold"
            )
        if fairness.min_group_size < 1:
            raise InvalidInput(
                "fairness min_group_size must be at least 1",
                field="guardrails.fairness.min_group_size",
            )


def require_running(model: ModelState, experiment_id: str) -> Experiment:
    """The experiment, if it still runs (Conflict otherwise)."""
    experiment = model.experiments.get(experiment_id)
    if experiment is None:
        raise Conflict(f"no experiment {experiment_id} on {model.name}")
    if experiment.status != "running":
        raise Conflict(f"experiment {experiment_id} has ended ({experiment.status})")
    return experiment


def record(model: ModelState, reported: cmd.ExperimentReported) -> list[ev.Event]:
    """A look at a running experiment (and its conclusion); stale looks are refused."""
    experiment = require_running(model, reported.update.experiment_id)
    started = experiment.started
    slot = model.deployments.get(started.environment)
    if slot is None or slot.experiment != started.experiment_id:
        raise Conflict(f"experiment {started.experiment_id} no longer runs")
    return [reported.update, *([reported.ended] if reported.ended is not None else [])]


def end_breaching_challenger(
    command: cmd.EndBreachingChallenger, state: ModelState | None
) -> list[ev.Event]:
    """The challenger of an experiment ended on a guardrail stops serving; nothing if it
    already has (a repeated follow-up, or an operator was quicker)."""
    model = require_model(command.name, state)
    ended = command.ended
    experiment = model.experiments.get(ended.experiment_id)
    if experiment is None or ended.outcome != "guardrail_breach":
        raise Conflict(f"experiment {ended.experiment_id} did not end on a guardrail")
    started = experiment.started
    slot = model.deployments.get(started.environment)
    if slot is None or slot.challenger != started.challenger:
        return []
    return [
        ev.DeploymentChanged(
            name=model.name,
            environment=started.environment,
            action="demotion",
            version=started.challenger,
            champion=slot.champion,
            reason=f"experiment {started.experiment_id}: {ended.reason}",
        )
    ]
