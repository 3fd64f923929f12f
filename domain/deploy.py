"""Deployment deciders: promotions with their gates, ended experiments, rollbacks, and
drift actions."""

from __future__ import annotations

import re
from datetime import datetime

from domain import commands as cmd
from domain import events as ev
from domain.decide import require_model, require_version
from domain.errors import Conflict, InvalidInput
from domain.gates import evaluate_gates
from domain.policy import GateResult, Policy
from domain.state import ModelState

_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def plan_promotions(
    state: ModelState | None,
    name: str,
    changes: list[cmd.DeploymentChange],
    *,
    policy: Policy,
    now: datetime,
) -> list[tuple[cmd.DeploymentChange, list[GateResult]]]:
    """The gates of each change, without deciding (a dry run shows exactly these)."""
    model = require_model(name, state)
    if not changes:
        raise InvalidInput("at least one change is needed", field="changes")
    environments = [c.environment for c in changes]
    if len(set(environments)) != len(environments):
        raise InvalidInput("one change per environment in a set", field="changes")
    plan: list[tuple[cmd.DeploymentChange, list[GateResult]]] = []
    for change in changes:
        if isinstance(change, cmd.EndChallenger):
            plan.append((change, [_challenger_gate(model, change)]))
            continue
        _check_change(model, change)
        version = require_version(model, change.version)
        plan.append((change, evaluate_gates(model, version, change.environment, policy, now)))
    return plan


def promote(
    command: cmd.ChangeDeployments, state: ModelState | None, facts: cmd.Facts
) -> list[ev.Event]:
    """Move serving pointers, all or none; 409 listing every unmet gate."""
    plan = plan_promotions(state, command.name, command.changes, policy=facts.policy, now=facts.now)
    unmet = [
        {"name": gate.name, "detail": gate.detail, "environment": change.environment}
        for change, gates in plan
        for gate in gates
        if not gate.passed
    ]
    if unmet:
        raise Conflict(
            "deployment change blocked: " + "; ".join(f"{g['name']}: {g['detail']}" for g in unmet),
            unmet_gates=unmet,
        )
    assert state is not None
    return [
        _ended(state, change)
        if isinstance(change, cmd.EndChallenger)
        else _deployment_change(state, change, gates, facts.policy_version)
        for change, gates in plan
    ]


def rollback(command: cmd.Rollback, state: ModelState | None) -> list[ev.Event]:
    """Undo an environment's last move in one call (the emergency stop).

    While a challenger runs (canary, shadow, bandit) the rollback ends it: the champion takes
    all traffic and the challenger is marked rolled back. Otherwise the environment returns
    to its last good champion.
    """
    name = command.name
    model = require_model(name, state)
    slot = model.deployments.get(command.environment)
    if slot is None or slot.champion is None:
        raise Conflict(f"nothing is deployed to {command.environment}")
    if slot.challenger is not None:
        return [
            ev.DeploymentChanged(
                name=name,
                environment=command.environment,
                action="rollback",
                version=slot.challenger,
                champion=slot.champion,
                reason=command.reason,
            )
        ]
    bad = {*slot.rolled_back, slot.champion}
    earlier = [
        v
        for v in reversed(slot.champion_history)
        if v not in bad and model.versions[v].retired_at is None
    ]
    if not earlier:
        raise Conflict(f"{command.environment} has no earlier good champion to return to")
    return [
        ev.DeploymentChanged(
            name=name,
            environment=command.environment,
            action="rollback",
            version=earlier[0],
            champion=earlier[0],
            reason=command.reason,
        )
    ]


def settle_experiment(
    state: ModelState, conclusion: ev.ExperimentConcluded, facts: cmd.Facts
) -> ev.DeploymentChanged:
    """A concluded bandit experiment ends: its winner becomes the only version serving.

    A challenger that won becomes champion only if it still passes every promotion gate
    (an approval may have expired since it joined); otherwise the champion keeps all traffic
    and the reason names what the winner lacks.
    """
    environment, winner = conclusion.environment, conclusion.winner
    slot = state.deployments[environment]
    assert slot.champion is not None
    gates: list[GateResult] = []
    champion, why = winner, ""
    odds = conclusion.probability_to_beat
    won = (
        f"champion {winner} won (the challenger beats it with probability {odds:.4f})"
        if winner == slot.champion
        else f"version {winner} won (it beats champion {slot.champion} with probability {odds:.4f})"
    )
    if winner != slot.champion:
        version = require_version(state, winner)
        gates = evaluate_gates(state, version, environment, facts.policy, facts.now)
        unmet = [f"{g.name}: {g.detail}" for g in gates if not g.passed]
        if unmet:
            champion = slot.champion
            why = f"; version {winner} cannot become champion ({'; '.join(unmet)})"
    return ev.DeploymentChanged(
        name=state.name,
        environment=environment,
        action="conclusion",
        version=winner,
        champion=champion,
        reason=f"bandit experiment concluded: {won}{why}; version {champion} serves all traffic",
        policy_version=facts.policy_version,
        gates=gates,
    )


def drift_action(state: ModelState, alert: ev.DriftDetected, policy: Policy) -> list[ev.Event]:
    """What policy does about a drift alert: demote a critically drifting canary."""
    if alert.severity != "critical" or policy.critical_drift_on_canary == "none":
        return []
    reason = f"critical drift: {alert.statistic} = {alert.value:g} > {alert.threshold:g}"
    return _demote_canary(state, alert.version, alert.environment, reason)


def performance_action(
    state: ModelState, alert: ev.PerformanceAlert, policy: Policy
) -> list[ev.Event]:
    """What policy does about a performance alert: demote a canary that critically fails."""
    if alert.severity != "critical" or policy.critical_performance_on_canary == "none":
        return []
    reason = f"critical performance: {alert.reason}"
    return _demote_canary(state, alert.version, alert.environment, reason)


def _demote_canary(
    state: ModelState, version: int, environment: str | None, reason: str
) -> list[ev.Event]:
    """The version ends as the canary of the environment (every one, if None)."""
    return [
        ev.DeploymentChanged(
            name=state.name,
            environment=env,
            action="demotion",
            version=version,
            champion=slot.champion,
            reason=reason,
        )
        for env, slot in sorted(state.deployments.items())
        if slot.challenger == version
        and slot.strategy == "canary"
        and (environment is None or environment == env)
    ]


def _check_change(model: ModelState, change: cmd.Promote) -> None:
    if not _ENVIRONMENT.match(change.environment):
        raise InvalidInput("environment must be 1-40 of a-z, 0-9, '_', '-'", field="environment")
    if change.strategy == "canary" and not (0 < (change.traffic_percent or 0) < 100):
        raise InvalidInput("canary needs 0 < traffic_percent < 100", field="traffic_percent")
    if change.strategy != "canary" and change.traffic_percent is not None:
        raise InvalidInput("traffic_percent applies to canary only", field="traffic_percent")
    slot = model.deployments.get(change.environment)
    if change.strategy != "full" and (slot is None or slot.champion is None):
        raise Conflict(f"{change.strategy} needs a champion in {change.environment} to run beside")
    if slot is not None and change.version in (slot.champion, slot.challenger):
        serving = "champion" if change.version == slot.champion else "challenger"
        if change.strategy == "full" and serving == "champion":
            raise Conflict(f"version {change.version} is already champion in {change.environment}")


def _challenger_gate(model: ModelState, change: cmd.EndChallenger) -> GateResult:
    if not _ENVIRONMENT.match(change.environment):
        raise InvalidInput("environment must be 1-40 of a-z, 0-9, '_', '-'", field="environment")
    if not change.reason.strip():
        raise InvalidInput("ending a challenger needs a reason", field="reason")
    slot = model.deployments.get(change.environment)
    if slot is None or slot.challenger is None:
        return GateResult(
            name="challenger_running",
            passed=False,
            detail=f"no challenger runs in {change.environment}",
        )
    share = f" at {slot.traffic_percent:g}%" if slot.strategy == "canary" else ""
    return GateResult(
        name="challenger_running",
        passed=True,
        detail=f"version {slot.challenger} runs as {slot.strategy} challenger{share} "
        f"beside champion {slot.champion}",
    )


def _ended(state: ModelState, change: cmd.EndChallenger) -> ev.DeploymentChanged:
    slot = state.deployments[change.environment]
    assert slot.challenger is not None
    return ev.DeploymentChanged(
        name=state.name,
        environment=change.environment,
        action="demotion",
        version=slot.challenger,
        champion=slot.champion,
        reason=change.reason,
    )


def _deployment_change(
    state: ModelState, change: cmd.Promote, gates: list[GateResult], policy_version: int
) -> ev.DeploymentChanged:
    slot = state.deployments.get(change.environment)
    full = change.strategy == "full"
    return ev.DeploymentChanged(
        name=state.name,
        environment=change.environment,
        action="promotion",
        version=change.version,
        champion=change.version if full else (slot.champion if slot else None),
        challenger=None if full else change.version,
        strategy=change.strategy,
        traffic_percent=change.traffic_percent,
        policy_version=policy_version,
        gates=gates,
    )
