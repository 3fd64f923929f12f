"""One look at an A/B experiment: its always-valid statistics, its guardrails, and the
conclusion policy reaches (if any).

The policy of a look, in order, once both arms have `min_samples_per_arm`: a challenger
guardrail crossed is a guardrail breach; a p-value at or below alpha names the better arm for
the metric's direction the winner; both arms at the horizon without that is "no difference".
"""

from __future__ import annotations

import math

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.sequential import Estimate, Moments, look
from domain.state import Experiment


class ArmData(msgspec.Struct, frozen=True):
    """What the logged predictions of one arm hold (gathered by the update job)."""

    version: int
    predictions: int
    moments: Moments
    errors: int = 0
    p99_latency_ms: float | None = None
    # per group of the fairness guardrail's feature (see `ev.ArmTotals.groups`)
    groups: dict[str, list[int]] = msgspec.field(default_factory=dict)


def update(
    experiment: Experiment,
    champion: ArmData,
    challenger: ArmData,
    job_id: str | None = None,
    *,
    totals: ev.LookTotals | None = None,
) -> cmd.ExperimentReported:
    """One look: the statistics, the guardrails, and the conclusion if policy reaches one;
    `totals` (what the next look adds to) is recorded with it."""
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
        totals=totals,
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
    fairness = limits.fairness
    if fairness is not None:
        gap = fairness_gap(arm.groups, fairness.metric, fairness.min_group_size)
        checks.append(
            ev.GuardrailCheck(
                name=f"{fairness.metric}_difference({fairness.feature})",
                value=gap,
                limit=fairness.max_difference,
                passed=gap is None or gap <= fairness.max_difference,
            )
        )
    return checks


def fairness_gap(
    groups: dict[str, list[int]], metric: ev.FairnessMetric, min_group_size: int
) -> float | None:
    """The largest difference between groups (None: fewer than two groups to compare):
    of positive-prediction rates (demographic parity), or the larger of the true- and
    false-positive rates' differences (equalized odds; groups need both labels)."""
    if metric == "demographic_parity":
        rates = [
            positive / rows for rows, positive, *_ in groups.values() if rows >= min_group_size
        ]
        return max(rates) - min(rates) if len(rates) >= 2 else None
    tprs, fprs = [], []
    for _, _, ones, true_pos, zeros, false_pos in groups.values():
        if ones + zeros >= min_group_size and ones and zeros:
            tprs.append(true_pos / ones)
            fprs.append(false_pos / zeros)
    if len(tprs) < 2:
        return None
    return max(max(tprs) - min(tprs), max(fprs) - min(fprs))


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
