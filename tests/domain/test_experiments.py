"""Ending experiments as given/when/then: a challenger ended by a caller, by a rollback, or
by its bandit experiment's conclusion (once)."""

from __future__ import annotations

import pytest

from domain import commands as cmd
from domain import events as ev
from domain.errors import Conflict, InvalidInput
from domain.handle import decide as when_command
from domain.policy import Policy
from domain.state import ModelState
from tests.domain.test_deciders import NAME, compiled, deployed, facts, given, registered, version

ENV = "production"
UNGATED = Policy(gated_environments=[])


def challenger(number: int, strategy: str = "canary", champion: int = 1) -> tuple[ev.Event, str]:
    return ev.DeploymentChanged(
        name=NAME,
        environment=ENV,
        action="promotion",
        version=number,
        champion=champion,
        challenger=number,
        strategy=strategy,  # type: ignore[arg-type]
        traffic_percent=20 if strategy == "canary" else None,
    ), "pipeline"


def two_versions() -> list[tuple[ev.Event, str]]:
    return [registered(), version(1), compiled(1), version(2), compiled(2), deployed(1)]


def end(reason: str = "error rate up", environment: str = ENV) -> cmd.ChangeDeployments:
    change = cmd.EndChallenger(environment=environment, reason=reason)
    return cmd.ChangeDeployments(name=NAME, changes=[change])


@pytest.mark.parametrize("strategy", ["canary", "shadow", "bandit"])
def test_ending_a_challenger_leaves_the_champion_serving_everything(strategy: str) -> None:
    # given: champion 1, challenger 2
    state = given(*two_versions(), challenger(2, strategy))
    # when: the challenger is ended
    events = when_command(end(), state, facts(UNGATED))
    # then: a demotion with its reason; the champion takes all traffic
    assert events == [
        ev.DeploymentChanged(
            name=NAME,
            environment=ENV,
            action="demotion",
            version=2,
            champion=1,
            reason="error rate up",
        )
    ]
    after = given(*two_versions(), challenger(2, strategy), (events[0], "pipeline"))
    assert after is not None
    slot = after.deployments[ENV]
    assert (slot.champion, slot.challenger, slot.strategy, slot.traffic_percent) == (
        1,
        None,
        "full",
        None,
    )
    assert (slot.action, slot.reason) == ("demotion", "error rate up")


def test_ending_needs_a_running_challenger_and_a_reason() -> None:
    # given: only a champion
    state = given(*two_versions())
    # when/then: nothing to end is a conflict naming the gate
    with pytest.raises(Conflict) as caught:
        when_command(end(), state, facts(UNGATED))
    assert caught.value.extra["unmet_gates"][0]["name"] == "challenger_running"
    # and a blank reason is refused
    running = given(*two_versions(), challenger(2))
    with pytest.raises(InvalidInput, match="reason"):
        when_command(end(reason=" "), running, facts(UNGATED))


def test_a_rollback_while_a_challenger_runs_ends_it_first() -> None:
    # given: champion 1 (the only champion ever), canary 2 at 20%
    history = [*two_versions(), challenger(2)]
    state = given(*history)
    # when: the emergency stop
    rollback = cmd.Rollback(name=NAME, environment=ENV, reason="stop")
    events = when_command(rollback, state, facts())
    # then: the challenger is ended, the champion stays
    assert [(e.action, e.version, e.champion, e.challenger) for e in events] == [  # type: ignore[attr-defined]
        ("rollback", 2, 1, None)
    ]
    after = given(*history, (events[0], "pipeline"))
    assert after is not None
    slot = after.deployments[ENV]
    assert (slot.champion, slot.challenger, slot.rolled_back) == (1, None, [2])
    # and a second rollback has no earlier champion to return to
    with pytest.raises(Conflict, match="no earlier good champion"):
        when_command(rollback, after, facts())


def test_after_ending_the_challenger_a_rollback_returns_to_the_earlier_champion() -> None:
    # given: champion 1, then champion 2, then canary 3 beside 2
    history = [
        *two_versions(),
        version(3),
        compiled(3),
        deployed(2),
        challenger(3, champion=2),
    ]
    rollback = cmd.Rollback(name=NAME, environment=ENV, reason="stop")
    first = when_command(rollback, given(*history), facts())
    history.append((first[0], "pipeline"))
    # when: rolled back again
    second = when_command(rollback, given(*history), facts())
    # then: the champion returns to 1 (3 was the challenger ended, 2 the champion left)
    assert [(e.champion, e.challenger) for e in [*first, *second]] == [(2, None), (1, None)]  # type: ignore[attr-defined]


def _bandit(winner: int | None, probability: float = 0.99) -> cmd.RecordJobOutcome:
    arms = [
        ev.BanditArm(version=v, successes=50, failures=50, allocation=0.5, probability_best=0.5)
        for v in (1, 2)
    ]
    update = ev.BanditUpdated(
        name=NAME, environment=ENV, champion=1, arms=arms, probability_to_beat=probability
    )
    conclusion = None
    if winner is not None:
        conclusion = ev.ExperimentConcluded(
            name=NAME, environment=ENV, champion=1, winner=winner, probability_to_beat=probability
        )
    job = ev.JobRequested(job_id="job-b", kind="bandit", name=NAME, params={"environment": ENV})
    return cmd.RecordJobOutcome(
        job=job,
        attempt=1,
        seconds=0.1,
        outcome=cmd.BanditReported(update=update, conclusion=conclusion),
    )


def _after(*events: ev.Event) -> ModelState | None:
    return given(*two_versions(), challenger(2, "bandit"), *((e, "worker") for e in events))


def test_a_conclusion_settles_the_deployment_on_the_winner() -> None:
    # given: a bandit experiment, champion 1 against 2
    state = _after()
    # when: its update concludes for version 2
    events = when_command(_bandit(winner=2), state, facts(UNGATED))
    # then: concluded once, and the deployment says what now serves: 2 alone
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BanditUpdated", "ExperimentConcluded", "DeploymentChanged", "JobSucceeded"]
    settled = events[2]
    assert isinstance(settled, ev.DeploymentChanged)
    assert (settled.action, settled.champion, settled.challenger, settled.strategy) == (
        "conclusion",
        2,
        None,
        "full",
    )
    assert "version 2 won" in settled.reason
    assert events[3].result["champion"] == 2  # type: ignore[attr-defined]
    slot = _after(*events).deployments[ENV]  # type: ignore[union-attr]
    assert (slot.champion, slot.challenger, slot.strategy) == (2, None, "full")


def test_given_concluded_another_update_concludes_nothing() -> None:
    # given: the experiment concluded
    state = _after(*when_command(_bandit(winner=2), _after(), facts(UNGATED)))
    # when: another update arrives (a job requested before the conclusion), concluding again
    # then: no second conclusion: the experiment has ended
    with pytest.raises(Conflict, match="has ended"):
        when_command(_bandit(winner=2), state, facts(UNGATED))


def test_a_champion_that_wins_keeps_serving_alone() -> None:
    events = when_command(_bandit(winner=1, probability=0.01), _after(), facts(UNGATED))
    settled = events[2]
    assert isinstance(settled, ev.DeploymentChanged)
    assert (settled.champion, settled.challenger, settled.gates) == (1, None, [])


def test_a_winner_that_no_longer_passes_its_gates_leaves_the_champion_serving() -> None:
    # given: production is gated and version 2 has no approval (it lapsed, say)
    gated = Policy(gated_environments=[ENV])
    # when: the experiment concludes for 2
    events = when_command(_bandit(winner=2), _after(), facts(gated))
    # then: it still ends, on the champion, and says why
    settled = events[2]
    assert isinstance(settled, ev.DeploymentChanged)
    assert (settled.champion, settled.challenger) == (1, None)
    assert "cannot become champion" in settled.reason and "approvals" in settled.reason


def test_a_stale_update_from_another_experiment_is_refused() -> None:
    # given: the experiment now runs 1 against 3
    state = given(*two_versions(), version(3), compiled(3), challenger(3, "bandit"))
    # when/then: an update computed for 1 against 2 records nothing
    with pytest.raises(Conflict, match="changed meanwhile"):
        when_command(_bandit(winner=2), state, facts(UNGATED))
