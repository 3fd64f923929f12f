"""Outcome monitoring as given/when/then: a performance check's outcome is recorded with its
alerts, judged against the version's validation metrics and the policy; a critical alert
demotes a canary, as critical drift does."""

from __future__ import annotations

import pytest

from domain import commands as cmd
from domain import events as ev
from domain.decide import amend_policy
from domain.errors import Conflict, NotFound
from domain.handle import decide as when_command
from domain.handle import event_ids
from domain.performance import judge, worst
from domain.policy import PerformanceThresholds, Policy, Threshold
from tests.domain.test_deciders import NAME, compiled, deployed, facts, given, registered, version

LIMITS = PerformanceThresholds()


def canary_of_2_in_staging() -> list[tuple[ev.Event, str]]:
    return [
        registered(),
        version(1),
        compiled(1),
        version(2),
        compiled(2),
        deployed(1, "staging"),
        (
            ev.DeploymentChanged(
                name=NAME,
                environment="staging",
                action="promotion",
                version=2,
                champion=1,
                challenger=2,
                strategy="canary",
                traffic_percent=20,
            ),
            "pipeline",
        ),
    ]


def alert(severity: str, number: int = 2, environment: str = "staging") -> ev.PerformanceAlert:
    return ev.PerformanceAlert(
        name=NAME,
        version=number,
        environment=environment,
        metric="auc",
        value=0.7,
        baseline=0.9,
        threshold=0.08,
        severity=severity,  # type: ignore[arg-type]
        rows=500,
        reason="auc 0.7 is 0.2000 below validation (0.9000) > 0.08",
        job_id="job-perf",
    )


def job(number: int = 2) -> ev.JobRequested:
    return ev.JobRequested(
        job_id="job-perf",
        kind="performance",
        name=NAME,
        version=number,
        params={"environment": "staging"},
    )


def checked(severity: str) -> ev.PerformanceChecked:
    return ev.PerformanceChecked(
        name=NAME,
        version=2,
        environment="staging",
        severity=severity,  # type: ignore[arg-type]
        rows=500,
        window_days=7.0,
        task="binary",
        metrics={"auc": 0.7},
        baseline={"auc": 0.9},
        job_id="job-perf",
    )


def test_given_validation_metrics_when_live_ones_fall_then_drops_are_graded() -> None:
    baseline = {"auc": 0.90, "precision": 0.80, "brier": 0.10}
    # given a small auc drop, a large precision drop and a brier rise between the grades
    live = {"auc": 0.88, "precision": 0.60, "brier": 0.13}
    # when judged
    findings = judge(live, baseline, LIMITS, {})
    # then the worst comes first, and what stays within both grades is not a finding
    assert [(f.metric, f.severity) for f in findings] == [
        ("precision", "critical"),
        ("brier", "warning"),
    ]
    assert findings[0].baseline == 0.80 and findings[0].threshold == LIMITS.precision_drop_critical
    assert worst(findings) == "critical" and worst([]) == "info"


def test_given_a_regression_when_its_error_grows_then_the_ratio_to_validation_is_judged() -> None:
    findings = judge({"rmse": 1.3, "mae": 2.0}, {"rmse": 1.0, "mae": 1.0}, LIMITS, {})
    assert [(f.metric, f.severity, f.threshold) for f in findings] == [
        ("mae", "critical", LIMITS.error_ratio_critical),
        ("rmse", "warning", LIMITS.error_ratio_warning),
    ]


def test_given_no_validation_value_when_the_policy_bounds_the_metric_then_it_is_critical() -> None:
    # given a version that recorded no validation auc, and a tier that requires auc >= 0.75
    bounds = {"auc": Threshold(min=0.75), "accuracy": Threshold(min=0.5)}
    # when live auc is 0.7
    findings = judge({"auc": 0.7, "accuracy": 0.9}, {}, LIMITS, bounds)
    # then the bound the promotion gate would apply is what is failed
    assert [(f.metric, f.severity, f.baseline, f.threshold) for f in findings] == [
        ("auc", "critical", None, 0.75)
    ]


def test_given_a_performance_job_when_its_outcome_is_recorded_then_check_alerts_and_close() -> None:
    state = given(*canary_of_2_in_staging())
    outcome = cmd.PerformanceReported(check=checked("critical"), alerts=[alert("critical")])
    record = cmd.RecordJobOutcome(job=job(), attempt=1, seconds=0.5, outcome=outcome)
    events = when_command(record, state, facts())
    assert [type(e) for e in events] == [
        ev.PerformanceChecked,
        ev.PerformanceAlert,
        ev.JobSucceeded,
    ]
    closed = events[-1]
    assert isinstance(closed, ev.JobSucceeded)
    assert closed.result == {"severity": "critical", "alerts": 1, "rows": 500}
    # a second attempt at recording gets the same ids: a replay, never a second alert
    assert event_ids(record, 3) == event_ids(record, 3)


def test_given_an_unknown_version_when_the_outcome_is_recorded_then_not_found() -> None:
    state = given(registered(), version(1))
    outcome = cmd.PerformanceReported(check=checked("info"), alerts=[])
    with pytest.raises(NotFound):
        when_command(
            cmd.RecordJobOutcome(job=job(), attempt=1, seconds=0.1, outcome=outcome),
            state,
            facts(),
        )


def test_given_a_canary_when_a_critical_performance_alert_then_it_is_demoted() -> None:
    state = given(*canary_of_2_in_staging())
    respond = cmd.RespondToPerformance(name=NAME, alert=alert("critical"))
    actions = when_command(respond, state, facts())
    assert [(a.action, a.version, a.champion, a.challenger) for a in actions] == [  # type: ignore[attr-defined]
        ("demotion", 2, 1, None)
    ]
    assert "critical performance: auc" in actions[0].reason  # type: ignore[attr-defined]
    # the response's ids are fixed by the job: a retried follow-up replays
    assert event_ids(respond, 1) == event_ids(respond, 1) is not None


def test_given_a_canary_when_a_warning_or_the_policy_says_none_then_nothing_happens() -> None:
    state = given(*canary_of_2_in_staging())
    warning = cmd.RespondToPerformance(name=NAME, alert=alert("warning"))
    assert when_command(warning, state, facts()) == []
    critical = cmd.RespondToPerformance(name=NAME, alert=alert("critical"))
    lenient = Policy(critical_performance_on_canary="none")
    assert when_command(critical, state, facts(lenient)) == []
    # a critical alert on the champion (no canary of it) moves nothing either
    on_champion = cmd.RespondToPerformance(name=NAME, alert=alert("critical", number=1))
    assert when_command(on_champion, state, facts()) == []


def test_given_a_model_when_a_performance_job_is_requested_then_it_needs_something_serving() -> (
    None
):
    state = given(registered(), version(1), compiled(1))
    request = cmd.RequestJob(name=NAME, job_id="j", kind="performance", params={})
    with pytest.raises(Conflict, match="nothing serves in production"):
        when_command(request, state, facts())
    named = cmd.RequestJob(name=NAME, job_id="j", kind="performance", version=1, params={})
    [requested] = when_command(named, state, facts())
    assert isinstance(requested, ev.JobRequested)
    assert requested.params == {"environment": "production"}


def test_given_a_policy_when_performance_limits_are_amended_then_the_rest_keep_their_values() -> (
    None
):
    amended = amend_policy(
        cmd.AmendPolicy(tier="low", changes={"performance": {"min_labels": 50}}),
        facts(Policy(critical_performance_on_canary="none")),
    )
    [event] = amended
    assert isinstance(event, ev.PolicySet)
    assert event.policy.performance == PerformanceThresholds(min_labels=50)
    assert event.policy.critical_performance_on_canary == "none"
