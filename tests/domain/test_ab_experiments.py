"""A/B experiments as given/when/then: starting one (through the canary's gates), each look,
and the three conclusions: winner (recorded, not promoted), no difference at the horizon,
guardrail breach (the challenger ended, once)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from scipy import stats

from domain import commands as cmd
from domain import events as ev
from domain.errors import Conflict, InvalidInput
from domain.handle import decide as when_command
from domain.handle import event_ids
from domain.looks import ArmData, fairness_gap, update
from domain.policy import Policy
from domain.sequential import Moments
from domain.state import ModelState
from tests.domain.test_deciders import NAME, facts, given
from tests.domain.test_experiments import ENV, UNGATED, challenger, two_versions

EXP = "exp-1"


def FAIR(**changes: object) -> ev.FairnessGuardrail:  # noqa: N802 - reads as a constant
    fields: dict[str, object] = {"feature": "b", "max_difference": 0.1}
    return ev.FairnessGuardrail(**(fields | changes))  # type: ignore[arg-type]


def start(**changes: object) -> cmd.StartExperiment:
    fields: dict[str, object] = {
        "name": NAME,
        "experiment_id": EXP,
        "environment": ENV,
        "champion": 1,
        "challenger": 2,
        "traffic_percent": 50.0,
        "metric": ev.ExperimentMetric(name="conversion"),
        "guardrails": ev.Guardrails(max_error_rate=0.01, max_p99_latency_ms=5.0),
        "minimum_detectable_effect": 0.02,
    }
    return cmd.StartExperiment(**(fields | changes))  # type: ignore[arg-type]


def running(*extra: tuple[ev.Event, str]) -> tuple[ModelState, list[tuple[ev.Event, str]]]:
    history = [*two_versions(), challenger(2)]
    events = when_command(start(traffic_percent=20.0), given(*history), facts(UNGATED))
    history += [(e, "pipeline") for e in events] + list(extra)
    state = given(*history)
    assert state is not None
    return state, history


def arm(version: int, n: int, successes: int, *, errors: int = 0, p99: float = 1.0) -> ArmData:
    moments = Moments(n=n, total=float(successes), total_sq=float(successes))
    return ArmData(version, predictions=n, moments=moments, errors=errors, p99_latency_ms=p99)


def test_starting_promotes_the_challenger_as_a_canary_through_its_gates() -> None:
    # given: champion 1 alone
    state = given(*two_versions())
    # when: an experiment between 1 and 2 at 50%
    events = when_command(start(), state, facts(UNGATED))
    # then: the canary promotion, then the experiment with its default horizon
    promotion, started = events
    assert isinstance(promotion, ev.DeploymentChanged) and promotion.strategy == "canary"
    assert (promotion.challenger, promotion.traffic_percent) == (2, 50.0)
    assert isinstance(started, ev.ExperimentStarted)
    # twice the fixed-horizon n at 80% power: 2 * 2 * (z_0.975 + z_0.8)^2 * 0.25 / 0.02^2
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert started.horizon_per_arm == math.ceil(2 * 2 * z**2 * 0.25 / 0.02**2) == 19_623
    after = given(*two_versions(), *((e, "ci") for e in events))
    assert after is not None and after.deployments[ENV].experiment == EXP
    assert after.experiments[EXP].status == "running"


def test_starting_beside_an_ungated_challenger_is_refused_with_its_gates() -> None:
    # given: production is gated; version 2 has no approvals
    state = given(*two_versions())
    # when/then: the experiment is refused like the promotion it needs
    with pytest.raises(Conflict) as caught:
        when_command(start(), state, facts(Policy()))
    assert any(g["name"] == "approvals" for g in caught.value.extra["unmet_gates"])


def test_an_already_running_canary_at_the_split_is_adopted_without_a_promotion() -> None:
    state = given(*two_versions(), challenger(2))  # canary at 20%
    events = when_command(start(traffic_percent=20.0), state, facts(UNGATED))
    assert [type(e) for e in events] == [ev.ExperimentStarted]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"challenger": 1}, "challenger"),
        ({"traffic_percent": 100.0}, "traffic_percent"),
        ({"alpha": 0.0}, "alpha"),
        ({"minimum_detectable_effect": 1.5}, "minimum_detectable_effect"),
        ({"metric": ev.ExperimentMetric(name="loss", kind="continuous")}, "horizon_per_arm"),
        ({"guardrails": ev.Guardrails(max_error_rate=-1.0)}, "guardrails"),
        (
            {"guardrails": ev.Guardrails(fairness=FAIR(max_difference=1.5))},
            "guardrails.fairness.max_difference",
        ),
        (
            {"guardrails": ev.Guardrails(fairness=FAIR(min_group_size=0))},
            "guardrails.fairness.min_group_size",
        ),
        (
            {"guardrails": ev.Guardrails(fairness=FAIR(feature="sex"))},
            "guardrails.fairness.feature",
        ),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        when_command(start(**changes), given(*two_versions()), facts(UNGATED))
    assert caught.value.extra["field"] == field


def test_one_experiment_per_environment_and_only_beside_the_champion() -> None:
    state, _ = running()
    with pytest.raises(Conflict, match="already runs"):
        when_command(start(experiment_id="exp-2"), state, facts(UNGATED))
    with pytest.raises(Conflict, match="not champion"):
        when_command(start(champion=2, challenger=1), state, facts(UNGATED))


def test_a_look_without_enough_outcomes_records_statistics_and_no_conclusion() -> None:
    state, _ = running()
    reported = update(state.experiments[EXP], arm(1, 50, 5), arm(2, 50, 9), "job-1")
    assert reported.ended is None
    assert reported.update.effect == pytest.approx(4 / 50)
    assert [g.passed for g in reported.update.guardrails] == [True, True]


def test_a_significant_look_names_the_winner_and_promotes_nothing() -> None:
    # given: a running experiment
    state, history = running()
    # when: the challenger converts 15% against 10% on 5,000 outcomes each
    reported = update(state.experiments[EXP], arm(1, 5_000, 500), arm(2, 5_000, 750), "job-1")
    # then: version 2 wins, and the record has no deployment change
    assert reported.ended is not None
    assert (reported.ended.outcome, reported.ended.winner) == ("winner", 2)
    assert (reported.ended.ci_low or 0) > 0 and reported.ended.p_value <= 0.05
    job = ev.JobRequested(
        job_id="job-1", kind="experiment", name=NAME, params={"experiment_id": EXP}
    )
    recorded = when_command(
        cmd.RecordJobOutcome(job=job, attempt=1, seconds=0.1, outcome=reported),
        state,
        facts(UNGATED),
    )
    assert [type(e) for e in recorded] == [
        ev.ExperimentUpdated,
        ev.ExperimentEnded,
        ev.JobSucceeded,
    ]
    after = given(*history, *((e, "worker") for e in recorded))
    assert after is not None
    assert after.experiments[EXP].status == "winner"
    slot = after.deployments[ENV]
    assert (slot.champion, slot.challenger, slot.experiment) == (1, 2, None)


def test_lower_is_better_names_the_champion_when_the_challenger_defaults_more() -> None:
    history = [*two_versions(), challenger(2)]
    metric = ev.ExperimentMetric(name="default", direction="decrease")
    events = when_command(
        start(traffic_percent=20.0, metric=metric), given(*history), facts(UNGATED)
    )
    state = given(*history, *((e, "ci") for e in events))
    assert state is not None
    reported = update(state.experiments[EXP], arm(1, 5_000, 500), arm(2, 5_000, 750))
    assert reported.ended is not None and reported.ended.winner == 1


def test_the_horizon_without_significance_is_no_difference() -> None:
    state, _ = running()
    horizon = state.experiments[EXP].started.horizon_per_arm
    reported = update(
        state.experiments[EXP], arm(1, horizon, horizon // 10), arm(2, horizon, horizon // 10)
    )
    assert reported.ended is not None
    assert (reported.ended.outcome, reported.ended.winner) == ("no_difference", None)


def test_a_guardrail_breach_ends_the_experiment_then_the_challenger_once() -> None:
    # given: a running experiment; the challenger's p99 latency is 9 ms against a 5 ms limit
    state, history = running()
    reported = update(state.experiments[EXP], arm(1, 200, 20), arm(2, 200, 20, p99=9.0), "job-1")
    ended = reported.ended
    assert ended is not None and ended.outcome == "guardrail_breach"
    assert "p99_latency_ms 9 > 5" in ended.reason
    history += [(reported.update, "worker"), (ended, "worker")]
    # when: the follow-up ends the breaching challenger
    stop = cmd.EndBreachingChallenger(name=NAME, ended=ended)
    events = when_command(stop, given(*history), facts(UNGATED))
    # then: a demotion naming the experiment; the champion serves everything
    assert events == [
        ev.DeploymentChanged(
            name=NAME,
            environment=ENV,
            action="demotion",
            version=2,
            champion=1,
            reason=f"experiment {EXP}: {ended.reason}",
        )
    ]
    assert event_ids(stop, 1) == event_ids(stop, 1)  # fixed by the job: a replay is a no-op
    # and a repeated follow-up finds nothing left to end
    assert when_command(stop, given(*history, (events[0], "worker")), facts(UNGATED)) == []


def test_a_look_at_an_experiment_whose_challenger_was_ended_is_refused() -> None:
    # given: an operator ended the challenger meanwhile
    end = ev.DeploymentChanged(
        name=NAME, environment=ENV, action="demotion", version=2, champion=1, reason="manual"
    )
    state, _ = running((end, "operator"))
    # then: the experiment stopped without a conclusion, and a late look is refused
    assert state.experiments[EXP].status == "stopped"
    assert "manual" in (state.experiments[EXP].stopped_reason or "")
    job = ev.JobRequested(
        job_id="job-2", kind="experiment", name=NAME, params={"experiment_id": EXP}
    )
    reported = update(state.experiments[EXP], arm(1, 50, 5), arm(2, 50, 5), "job-2")
    with pytest.raises(Conflict, match="ended"):
        when_command(
            cmd.RecordJobOutcome(job=job, attempt=1, seconds=0.1, outcome=reported),
            state,
            facts(UNGATED),
        )
    with pytest.raises(Conflict):
        when_command(
            cmd.RequestJob(
                name=NAME, job_id="job-3", kind="experiment", params={"experiment_id": EXP}
            ),
            state,
            facts(UNGATED),
        )


def _groups(groups: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, list[int]]:
    """The per-group counts the update job gathers, from arrays."""
    counts = {}
    for group in np.unique(groups):
        mask = groups == group
        t, p = y_true[mask], y_pred[mask]
        counts[str(group)] = [
            int(mask.sum()), int(p.sum()), int((t == 1).sum()), int(((t == 1) & (p == 1)).sum()),
            int((t == 0).sum()), int(((t == 0) & (p == 1)).sum()),
        ]  # fmt: skip
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_fairness_gaps_are_fairlearns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b", "c"], size=3_000, p=[0.5, 0.3, 0.2])
    y_true = (rng.random(3_000) < 0.3).astype(int)
    rate = np.where(groups == "a", 0.4, np.where(groups == "b", 0.25, 0.3))
    y_pred = (rng.random(3_000) < rate + 0.3 * y_true).astype(int)
    counts = _groups(groups, y_true, y_pred)
    parity = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    odds = equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    assert fairness_gap(counts, "demographic_parity", 30) == pytest.approx(parity, abs=1e-12)
    assert fairness_gap(counts, "equalized_odds", 30) == pytest.approx(odds, abs=1e-12)
    # groups below the minimum size are left out, as fairlearn on the rows of the others
    big = {g: c for g, c in counts.items() if c[0] >= 700}
    kept = np.isin(groups, list(big))
    assert fairness_gap(counts, "demographic_parity", 700) == pytest.approx(
        demographic_parity_difference(y_true[kept], y_pred[kept], sensitive_features=groups[kept]),
        abs=1e-12,
    )
    # one group is nothing to compare
    assert fairness_gap({"a": counts["a"]}, "demographic_parity", 1) is None


def test_a_fairness_gap_past_its_limit_is_a_guardrail_breach() -> None:
    # given: a running experiment with a demographic-parity guardrail on feature "b"
    history = [*two_versions(), challenger(2)]
    guarded = ev.Guardrails(fairness=FAIR(max_difference=0.1, min_group_size=50))
    events = when_command(
        start(traffic_percent=20.0, guardrails=guarded), given(*history), facts(UNGATED)
    )
    state = given(*history, *((e, "pipeline") for e in events))
    assert state is not None
    experiment = state.experiments[EXP]
    # when: the challenger's positive rate is 40% in group "1" and 20% in group "2"
    groups = {
        "1.0": [100, 40, 0, 0, 0, 0],
        "2.0": [100, 20, 0, 0, 0, 0],
        "3.0": [10, 10, 0, 0, 0, 0],
    }
    fair = msgspec.structs.replace(arm(2, 200, 20), groups=groups)
    reported = update(experiment, arm(1, 200, 20), fair, "job-1")
    # then: the gap 0.2 (group "3" too small to count) crossed 0.1: the experiment ends
    names = [c.name for c in reported.update.guardrails]
    assert names == ["error_rate", "demographic_parity_difference(b)"]
    check = reported.update.guardrails[-1]
    assert check.name == "demographic_parity_difference(b)"
    assert check.value == pytest.approx(0.2) and not check.passed
    assert reported.ended is not None and reported.ended.outcome == "guardrail_breach"
    assert "demographic_parity_difference(b) 0.2 > 0.1" in reported.ended.reason
    # and within the limit it passes
    within = {"1.0": [100, 25, 0, 0, 0, 0], "2.0": [100, 20, 0, 0, 0, 0]}
    fine = msgspec.structs.replace(arm(2, 200, 20), groups=within)
    assert update(experiment, arm(1, 200, 20), fine).ended is None
