"""Retraining on policy as given/when/then: given a model's history, when an alert is handed
to its retraining policy, then a train job (with what it resolved), a recorded skip, or
nothing. Also named datasets' versions and the train job's fairness check."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import commands as cmd
from domain import datasets
from domain import events as ev
from domain.errors import InvalidInput
from domain.handle import decide as when_command
from domain.handle import event_ids
from domain.policy import Policy, RetrainingPolicy
from domain.state import ModelState
from tests.domain.test_deciders import NAME, T0, deployed, facts, given, registered

DATASET = cmd.DatasetRef(name="transactions", dataset_version=3, sha256="d" * 64)
HOLDOUT = cmd.DatasetRef(name="holdout", dataset_version=1, sha256="e" * 64)


def trained(number: int) -> tuple[ev.Event, str]:
    """A version the train job registered: its recorded training parameters."""
    params = {
        "kind": "sklearn",
        "seed": 7,
        "task": "classification",
        "target": "is_fraud",
        "num_trees": 40,
        "features": ["amount", "hour"],
        "categorical": [],
        "max_leaf_nodes": 15,
        "categories": {},
    }
    lineage = ev.Lineage(dataset_sha256="a" * 64, target="is_fraud")
    return (
        ev.VersionRegistered(
            name=NAME,
            version=number,
            artifact_sha256=f"{number:064x}",
            artifact_size=10,
            format="sklearn-skops",
            feature_names=["amount", "hour"],
            params=params,
            lineage=lineage,
        ),
        "system:worker",
    )


def retraining_policy(**fields: object) -> tuple[ev.Event, str]:
    policy = RetrainingPolicy(dataset="transactions", **fields)  # type: ignore[arg-type]
    return ev.RetrainingPolicySet(name=NAME, policy=policy), "pipeline"


def drift(
    severity: ev.Severity = "critical", version: int = 1, job_id: str | None = "check-1"
) -> ev.DriftDetected:
    return ev.DriftDetected(
        name=NAME,
        version=version,
        statistic="psi",
        value=0.6,
        threshold=0.25,
        severity=severity,
        feature="amount",
        environment="production",
        job_id=job_id,
    )


def alerted(
    alert: ev.DriftDetected | ev.PerformanceAlert,
    *,
    position: int = 100,
    event_id: str = "alert-1",
    named: tuple[cmd.DatasetRef, ...] = (DATASET,),
) -> cmd.RespondWithRetraining:
    return cmd.RespondWithRetraining(
        name=NAME,
        alert=alert,
        alert_event_id=event_id,
        alert_position=position,
        datasets={d.name: d for d in named},
    )


def serving_version_1(*later: tuple[ev.Event, str]) -> ModelState | None:
    """Version 1 (trained) the production champion, version 2 registered; then `later`."""
    return given(registered(), trained(1), trained(2), deployed(1), *later)


def test_a_critical_drift_alert_requests_one_train_job_with_the_serving_versions_params() -> None:
    state = serving_version_1(retraining_policy())

    events = when_command(alerted(drift(version=1)), state, facts())

    triggered, job = events
    assert isinstance(triggered, ev.RetrainingTriggered)
    assert (triggered.alert_event_id, triggered.trigger, triggered.parent_version) == (
        "alert-1",
        "drift",
        1,
    )
    assert (triggered.dataset, triggered.dataset_version, triggered.dataset_sha256) == (
        "transactions",
        3,
        "d" * 64,
    )
    assert isinstance(job, ev.JobRequested) and job.kind == "train" and job.version is None
    assert job.job_id == triggered.job_id
    assert job.params == {
        "trainer": "sklearn",
        "seed": 7,
        "params": {
            "task": "classification",
            "num_trees": 40,
            "features": ["amount", "hour"],
            "categorical": [],
            "max_leaf_nodes": 15,
        },
        "dataset_sha256": "d" * 64,
        "target": "is_fraud",
        "retraining": {
            "triggered_by": "alert-1",
            "parent_version": 1,
            "dataset": "transactions",
            "dataset_version": 3,
        },
    }


def test_the_parent_is_the_champion_where_the_alert_was_raised_not_a_drifting_canary() -> None:
    canary = ev.DeploymentChanged(
        name=NAME,
        environment="production",
        action="promotion",
        version=2,
        champion=1,
        challenger=2,
        strategy="canary",
        traffic_percent=10,
    )
    state = serving_version_1((canary, "pipeline"), retraining_policy())

    triggered, _ = when_command(alerted(drift(version=2)), state, facts())

    assert isinstance(triggered, ev.RetrainingTriggered)
    assert (triggered.alert_version, triggered.parent_version) == (2, 1)


@pytest.mark.parametrize(
    ("policy", "alert"),
    [
        ({}, drift(severity="warning")),
        ({"triggers": ["performance"]}, drift()),
        ({"enabled": False}, drift()),
        ({"environments": ["staging"]}, drift()),
    ],
    ids=["not-critical", "not-a-trigger", "disabled", "another-environment"],
)
def test_alerts_the_policy_does_not_cover_decide_nothing(
    policy: dict[str, object], alert: ev.DriftDetected
) -> None:
    state = serving_version_1(retraining_policy(**policy))
    assert when_command(alerted(alert), state, facts()) == []


def test_without_a_policy_or_before_it_was_set_an_alert_decides_nothing() -> None:
    assert when_command(alerted(drift()), serving_version_1(), facts()) == []
    state = serving_version_1(retraining_policy())
    assert state is not None
    raised_before = alerted(drift(), position=state.retraining_position - 1)
    assert when_command(raised_before, state, facts()) == []


def test_a_critical_performance_alert_triggers_too() -> None:
    alert = ev.PerformanceAlert(
        name=NAME,
        version=1,
        environment="production",
        metric="auc",
        value=0.7,
        baseline=0.9,
        threshold=0.08,
        severity="critical",
        rows=500,
        reason="auc fell by 0.2",
        job_id="perf-1",
    )
    state = serving_version_1(retraining_policy())
    triggered, _ = when_command(alerted(alert), state, facts())
    assert isinstance(triggered, ev.RetrainingTriggered) and triggered.trigger == "performance"


def test_one_check_retrains_once_however_many_of_its_alerts_are_critical() -> None:
    state = serving_version_1(retraining_policy())
    first = when_command(alerted(drift()), state, facts())
    second_feature = alerted(drift(), event_id="alert-2", position=101)

    # the ids are fixed by the check: another process deciding either alert replays
    assert event_ids(alerted(drift()), 2) == event_ids(second_feature, 2)
    after = given(
        registered(), trained(1), trained(2), deployed(1), retraining_policy(), *first_with(first)
    )
    assert when_command(second_feature, after, facts()) == []


def first_with(events: list[ev.Event]) -> list[tuple[ev.Event, str]]:
    return [(event, "system:retraining") for event in events]


def test_within_the_cooldown_an_alert_of_another_check_is_skipped_with_the_reason() -> None:
    first = when_command(alerted(drift()), serving_version_1(retraining_policy()), facts())
    state = serving_version_1(retraining_policy(cooldown_hours=24), *first_with(first))
    later_check = alerted(drift(job_id="check-2"), event_id="alert-9", position=200)

    [skipped] = when_command(later_check, state, facts())

    assert isinstance(skipped, ev.RetrainingSkipped)
    assert "within the cooldown of 24 h" in skipped.reason
    assert skipped.alert_event_id == "alert-9"
    next_day = cmd.Facts(now=T0 + timedelta(days=2), policy=Policy())
    triggered, _ = when_command(later_check, state, next_day)
    assert isinstance(triggered, ev.RetrainingTriggered)


def test_a_dataset_name_without_versions_skips_and_says_so() -> None:
    state = serving_version_1(retraining_policy())
    [skipped] = when_command(alerted(drift(), named=()), state, facts())
    assert isinstance(skipped, ev.RetrainingSkipped)
    assert "'transactions' has no version" in skipped.reason


def test_a_tier_requiring_compliance_gets_a_fairness_check_on_the_evaluation_dataset() -> None:
    model = ev.ModelRegistered(name=NAME, risk_tier="medium", sensitive_features=["age_band"])
    state = given(
        (model, "pipeline"),
        trained(1),
        deployed(1),
        retraining_policy(evaluation_dataset="holdout"),
    )
    strict = facts(Policy(compliance_required=True))

    triggered, job = when_command(alerted(drift(), named=(DATASET, HOLDOUT)), state, strict)

    assert isinstance(job, ev.JobRequested)
    assert job.params["compliance"] == {"dataset_sha256": "e" * 64, "target": "is_fraud"}
    assert isinstance(triggered, ev.RetrainingTriggered)
    assert triggered.evaluation_dataset_sha256 == "e" * 64
    # no evaluation dataset named: trained all the same, and the reason says what is missing
    plain = given((model, "pipeline"), trained(1), deployed(1), retraining_policy())
    triggered, job = when_command(alerted(drift()), plain, strict)
    assert isinstance(job, ev.JobRequested) and "compliance" not in job.params
    assert isinstance(triggered, ev.RetrainingTriggered)
    assert "names no evaluation dataset" in triggered.reason


def test_the_trained_version_requests_its_compile_and_the_fairness_check_it_names() -> None:
    state = serving_version_1()
    job = ev.JobRequested(
        job_id="train-1",
        kind="train",
        name=NAME,
        params={"compliance": {"dataset_sha256": "e" * 64, "target": "is_fraud"}},
    )
    version = cmd.RegisterVersion(
        name=NAME,
        compile_job_id="compile-1",
        artifact_sha256="f" * 64,
        artifact_size=5,
        format="lightgbm",
        model_feature_names=["amount", "hour"],
    )
    outcome = cmd.RecordJobOutcome(
        job=job, attempt=1, seconds=1.0, outcome=cmd.Trained(version=version)
    )

    registered_, compile_, check, succeeded = when_command(outcome, state, facts())

    assert isinstance(registered_, ev.VersionRegistered) and registered_.version == 3
    assert isinstance(compile_, ev.JobRequested) and compile_.kind == "compile"
    assert isinstance(check, ev.JobRequested) and check.kind == "compliance"
    assert (check.version, check.params["dataset_sha256"]) == (3, "e" * 64)
    assert isinstance(succeeded, ev.JobSucceeded)
    assert succeeded.result["compliance_job_id"] == check.job_id


def test_a_caller_cannot_forge_a_retraining_lineage() -> None:
    request = cmd.RequestJob(
        name=NAME,
        job_id="j",
        kind="train",
        params={"dataset_sha256": "d" * 64, "target": "y", "retraining": {"triggered_by": "x"}},
    )
    with pytest.raises(InvalidInput, match="retraining policy only"):
        when_command(request, serving_version_1(), facts())


def test_a_policy_names_datasets_and_setting_the_same_one_again_records_nothing() -> None:
    state = serving_version_1(retraining_policy())
    same = cmd.SetRetrainingPolicy(name=NAME, policy=RetrainingPolicy(dataset="transactions"))
    assert when_command(same, state, facts()) == []
    for bad in (
        RetrainingPolicy(dataset="Bad Name"),
        RetrainingPolicy(dataset="ok", triggers=[]),
        RetrainingPolicy(dataset="ok", cooldown_hours=-1),
    ):
        with pytest.raises(InvalidInput):
            when_command(cmd.SetRetrainingPolicy(name=NAME, policy=bad), state, facts())


def test_each_new_file_under_a_name_is_its_next_version_and_the_latest_again_is_none() -> None:
    def upload(sha: str) -> cmd.AddDatasetVersion:
        return cmd.AddDatasetVersion(
            name="transactions", sha256=sha, rows=10, columns=["a"], format="csv", size=99
        )

    [first] = datasets.add_version(upload("a" * 64), None)
    assert isinstance(first, ev.DatasetVersionAdded) and first.dataset_version == 1
    state = datasets.evolve(None, first, 1, T0, "pipeline")
    assert datasets.add_version(upload("a" * 64), state) == []
    [second] = datasets.add_version(upload("b" * 64), state)
    assert isinstance(second, ev.DatasetVersionAdded) and second.dataset_version == 2
    with pytest.raises(InvalidInput):
        datasets.add_version(
            cmd.AddDatasetVersion(
                name="../etc", sha256="a" * 64, rows=1, columns=[], format="csv", size=1
            ),
            None,
        )


def test_a_train_jobs_fairness_check_must_name_a_dataset_and_target() -> None:
    state = serving_version_1()
    for check, field in (
        ("yes", "params.compliance"),
        ({"dataset_sha256": "nope", "target": "y"}, "params.compliance.dataset_sha256"),
        ({"dataset_sha256": "d" * 64}, "params.compliance.target"),
    ):
        request = cmd.RequestJob(
            name=NAME,
            job_id="j",
            kind="train",
            params={"dataset_sha256": "d" * 64, "target": "y", "compliance": check},
        )
        with pytest.raises(InvalidInput) as refused:
            when_command(request, state, facts())
        assert refused.value.extra["field"] == field
    fine = {"dataset_sha256": "d" * 64, "target": "y", "sensitive_features": ["age"]}
    request = cmd.RequestJob(
        name=NAME,
        job_id="j",
        kind="train",
        params={"dataset_sha256": "d" * 64, "target": "y", "compliance": fine},
    )
    [requested] = when_command(request, state, facts())
    assert isinstance(requested, ev.JobRequested) and requested.params["compliance"] == fine
