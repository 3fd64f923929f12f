"""Data-quality monitoring as given/when/then: a window's figures judged by the tier's
limits, and a check's outcome recorded with its alerts."""

from __future__ import annotations

import pytest

from domain import commands as cmd
from domain import events as ev
from domain.decide import amend_policy
from domain.errors import Conflict
from domain.handle import decide as when_command
from domain.policy import DataQualityThresholds, Policy
from domain.quality import FeatureQuality, judge
from tests.domain.test_deciders import NAME, compiled, deployed, facts, given, registered, version

LIMITS = DataQualityThresholds()


def test_given_a_clean_window_when_judged_then_nothing_is_found() -> None:
    clean = [
        FeatureQuality(
            feature="amount", null_rate=0.02, training_null_rate=0.01, out_of_range_rate=0.0
        ),
        FeatureQuality(feature="merchant", null_rate=0.0, training_null_rate=0.0, unseen_rate=0.0),
    ]
    assert judge(0.0, clean, LIMITS) == []


def test_given_broken_inputs_when_judged_then_each_limit_is_graded_worst_first() -> None:
    # given more nulls than in training, values out of range, unseen codes and a stuck feature
    window = [
        FeatureQuality(
            feature="amount", null_rate=0.31, training_null_rate=0.01, out_of_range_rate=0.02
        ),
        FeatureQuality(feature="merchant", null_rate=0.0, training_null_rate=0.0, unseen_rate=0.08),
        FeatureQuality(
            feature="hour",
            null_rate=0.0,
            training_null_rate=0.0,
            out_of_range_rate=0.0,
            constant=True,
        ),
    ]
    # when judged
    findings = judge(0.0, window, LIMITS)
    # then
    assert [(f.check, f.feature, f.severity) for f in findings] == [
        ("null_rate", "amount", "critical"),
        ("unseen_categories", "merchant", "critical"),
        ("out_of_range", "amount", "warning"),
        ("constant", "hour", "warning"),
    ]
    nulls = findings[0]
    assert (nulls.value, nulls.baseline, nulls.threshold) == (0.31, 0.01, 0.2)


def test_given_rows_of_another_width_when_judged_then_it_is_critical_whatever_the_limits() -> None:
    [width] = judge(0.01, [], DataQualityThresholds(constant_feature="none"))
    assert (width.check, width.feature, width.severity) == ("width", None, "critical")


def test_given_a_policy_that_ignores_constant_features_then_none_is_reported() -> None:
    stuck = FeatureQuality(feature="hour", null_rate=0.0, training_null_rate=0.0, constant=True)
    assert judge(0.0, [stuck], DataQualityThresholds(constant_feature="none")) == []
    assert judge(0.0, [stuck], DataQualityThresholds(constant_feature="critical"))[0].severity == (
        "critical"
    )


def test_given_a_data_quality_job_when_its_outcome_is_recorded_then_check_alerts_and_close() -> (
    None
):
    state = given(registered(), version(1), compiled(1), deployed(1, "staging"))
    job = ev.JobRequested(
        job_id="dq-1", kind="data_quality", name=NAME, version=1, params={"environment": "staging"}
    )
    check = ev.DataQualityChecked(
        name=NAME, version=1, environment="staging", severity="critical", rows=300, job_id="dq-1"
    )
    alert = ev.DataQualityAlert(
        name=NAME,
        version=1,
        environment="staging",
        check="null_rate",
        value=0.31,
        baseline=0.01,
        threshold=0.2,
        severity="critical",
        rows=300,
        reason="null_rate of amount is 31.00% (training 1.00%), past 0.2",
        feature="amount",
        job_id="dq-1",
    )
    outcome = cmd.DataQualityReported(check=check, alerts=[alert])
    events = when_command(
        cmd.RecordJobOutcome(job=job, attempt=1, seconds=0.2, outcome=outcome), state, facts()
    )
    assert events[:2] == [check, alert]
    assert isinstance(events[2], ev.JobSucceeded)
    assert events[2].result == {"severity": "critical", "alerts": 1, "rows": 300}


def test_given_nothing_serving_when_a_check_is_requested_without_a_version_then_conflict() -> None:
    state = given(registered(), version(1), compiled(1))
    request = cmd.RequestJob(name=NAME, job_id="j", kind="data_quality", params={})
    with pytest.raises(Conflict):
        when_command(request, state, facts())


def test_given_a_policy_when_data_quality_limits_are_amended_then_others_keep_theirs() -> None:
    [event] = amend_policy(
        cmd.AmendPolicy(tier="low", changes={"data_quality": {"min_rows": 20}}),
        facts(Policy(required_approvals=2)),
    )
    assert isinstance(event, ev.PolicySet)
    assert event.policy.data_quality == DataQualityThresholds(min_rows=20)
    assert event.policy.required_approvals == 2
