"""A/B experiment deciders: starting one, what each look records, and how one concludes.

An experiment compares the mean feedback reward of the predictions each arm served to units
assigned by hash (see `app.scoring.routing`). Each look computes always-valid statistics
(`domain.sequential`), so it may be read as often as wanted. The policy of a look, in order:
a challenger guardrail crossed ends the challenger; a p-value at or below alpha names the
better arm the winner; both arms at the horizon without that is "no difference". A winner is
recorded, never promoted: its promotion goes through the gates and approvals.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from domain import commands as cmd
from domain import events as ev
from domain.decide import require_model, require_version
from domain.deploy import promote
from domain.errors import Conflict, InvalidInput
from domain.sequential import Estimate, Moments, look
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
    require_version(model, command.challenger)
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


def require_running(model: ModelState, experiment_id: str) -> Experiment:
    """The experiment, if it still runs (Conflict otherwise)."""
    experiment = model.experiments.get(experiment_id)
    if experiment is None:
        raise Conflict(f"no experiment {experiment_id} on {model.name}")
    if experiment.status != "running":
        raise Conflict(f"experiment {experiment_id} has ended ({experiment.status})")
    return experiment


class ArmData:
    """What the logged predictions of one arm hold (gathered by the update job)."""

    __slots__ = ("errors", "moments", "p99_latency_ms", "predictions", "version")

    def __init__(
        self,
        version: int,
        *,
        predictions: int,
        moments: Moments,
        errors: int = 0,
        p99_latency_ms: float | None = None,
    ) -> None:
        self.version = version
        self.predictions = predictions
        self.moments = moments
        self.errors = errors
        self.p99_latency_ms = p99_latency_ms


def update(
    experiment: Experiment, champion: ArmData, challenger: ArmData, job_id: str | None = None
) -> cmd.ExperimentReported:
    """One look: the statistics, the guardrails, and the conclusion if policy reaches one."""
    started = experiment.started
    latest = experiment.latest
    previous = None
    if latest is not None:
        previous = Estimate(
            effect=latest.effect,
            std_error=latest.std_error,
            ci_low=-math.inf if latest.ci_low is None else latest.ci_low,
            ci_high=math.inf if latest.ci_high is None else latest.ci_high,
            p_value=latest.p_value,
            log_likelihood_ratio=0.0,
        )
    tau2 = started.minimum_detectable_effect**2
    estimate = look(
        champion.moments, challenger.moments, tau2=tau2, alpha=started.alpha, previous=previous
    )
    checks = guardrails(started.guardrails, challenger)
    updated = ev.ExperimentUpdated(
        name=started.name,
        experiment_id=started.experiment_id,
        champion=_summary(champion),
        challenger=_summary(challenger),
        effect=estimate.effect,
        std_error=estimate.std_error,
        ci_low=_bounded(estimate.ci_low),
        ci_high=_bounded(estimate.ci_high),
        p_value=estimate.p_value,
        guardrails=checks,
        job_id=job_id,
    )
    return cmd.ExperimentReported(
        update=updated, ended=_conclusion(started, updated, champion, challenger, job_id)
    )


def guardrails(limits: ev.Guardrails, arm: ArmData) -> list[ev.GuardrailCheck]:
    """The challenger's guardrails at this look."""
    checks = []
    if limits.max_error_rate is not None:
        rate = arm.errors / arm.predictions if arm.predictions else 0.0
        checks.append(
            ev.GuardrailCheck(
                name="error_rate",
                value=rate,
                limit=limits.max_error_rate,
                passed=rate <= limits.max_error_rate,
            )
        )
    if limits.max_p99_latency_ms is not None:
        latency = arm.p99_latency_ms
        checks.append(
            ev.GuardrailCheck(
                name="p99_latency_ms",
                value=latency,
                limit=limits.max_p99_latency_ms,
                passed=latency is None or latency <= limits.max_p99_latency_ms,
            )
        )
    return checks


def _summary(arm: ArmData) -> ev.ArmSummary:
    return ev.ArmSummary(
        version=arm.version,
        predictions=arm.predictions,
        outcomes=arm.moments.n,
        mean=arm.moments.mean,
        variance=arm.moments.variance,
        errors=arm.errors,
        p99_latency_ms=arm.p99_latency_ms,
    )


def _conclusion(
    started: ev.ExperimentStarted,
    updated: ev.ExperimentUpdated,
    champion: ArmData,
    challenger: ArmData,
    job_id: str | None,
) -> ev.ExperimentEnded | None:
    minimum = started.min_samples_per_arm
    breached = [c for c in updated.guardrails if not c.passed]
    outcome: ev.ExperimentOutcome | None = None
    winner, reason = None, ""
    if breached and challenger.predictions >= minimum:
        outcome = "guardrail_breach"
        reason = "; ".join(f"{c.name} {c.value:g} > {c.limit:g}" for c in breached)
        reason = f"challenger {started.challenger} crossed a guardrail: {reason}"
    elif min(champion.moments.n, challenger.moments.n) < minimum:
        return None
    elif updated.p_value <= started.alpha:
        better = (updated.effect > 0) == (started.metric.direction == "increase")
        winner = started.challenger if better else started.champion
        outcome = "winner"
        reason = (
            f"version {winner} wins on {started.metric.name}: {_described(updated)} "
            f"<= alpha {started.alpha:g}"
        )
    elif min(champion.moments.n, challenger.moments.n) >= started.horizon_per_arm:
        outcome = "no_difference"
        reason = (
            f"horizon of {started.horizon_per_arm} outcomes per arm reached: {_described(updated)}"
        )
    if outcome is None:
        return None
    return ev.ExperimentEnded(
        name=started.name,
        experiment_id=started.experiment_id,
        environment=started.environment,
        outcome=outcome,
        winner=winner,
        effect=updated.effect,
        ci_low=updated.ci_low,
        ci_high=updated.ci_high,
        p_value=updated.p_value,
        reason=reason,
        job_id=job_id,
    )


def _bounded(value: float) -> float | None:
    """JSON has no infinity: an unbounded end is recorded as None."""
    return value if math.isfinite(value) else None


def _described(updated: ev.ExperimentUpdated) -> str:
    low = -math.inf if updated.ci_low is None else updated.ci_low
    high = math.inf if updated.ci_high is None else updated.ci_high
    return (
        f"effect {updated.effect:+.4g} [{low:+.4g}, {high:+.4g}], "
        f"always-valid p = {updated.p_value:.3g}"
    )


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
