"""Given builders for the dossier tests: the steps of one model's history, chapter by chapter.

Each returns (event, actor, role) steps in log order; `fold` gives them positions and times.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.store.codec import RecordedEvent
from domain import events as ev
from domain.model import evolve
from domain.policy import GateResult, Policy, PolicyBook, Threshold
from domain.state import EventContext, ModelState

NAME = "credit-risk"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
ART1, ART2 = "a1" * 32, "a2" * 32
LIB1, LIB2 = "11" * 32, "22" * 32
REP1 = "r1" * 32
GATES_PASSED = [GateResult(name="approvals", passed=True, detail="2 of 2 required approvals")]

# (event, actor, role) in log order; positions and times are assigned by `fold`
Step = tuple[ev.AnyEvent, str, str]


def by_ci(event: ev.AnyEvent) -> Step:
    return event, "ci-bot", "ci"


def by_worker(event: ev.AnyEvent) -> Step:
    return event, "worker", "ci"


def approve(approver: str, version: int = 1) -> Step:
    approved = ev.VersionApproved(
        name=NAME,
        version=version,
        approver=approver,
        comment=f"ok by {approver}",
        policy_version=0,
        artifact_sha256=ART1,
        library_sha256=LIB1,
        report_sha256s=[REP1],
        expires_at=T0 + timedelta(days=90),
    )
    return approved, approver, "approver"


def revoke(approver: str, reason: str, version: int = 1) -> Step:
    revoked = ev.ApprovalRevoked(name=NAME, version=version, approver=approver, reason=reason)
    return revoked, approver, "approver"


def model_registered() -> list[Step]:
    """A high-risk model, with pipes in its description (Markdown must escape them)."""
    registered = ev.ModelRegistered(
        name=NAME,
        risk_tier="high",
        description="Scores loans | consumer credit",
        owner="risk-team",
        tags=["credit", "tabular"],
        sensitive_features=["age", "sex"],
    )
    return [(registered, "admin", "admin")]


def version_1_registered() -> list[Step]:
    lineage = ev.Lineage(
        git_commit="abc123", ci_run_url="https://ci.example/run/7", dataset_sha256="d5" * 32
    )
    registered = ev.VersionRegistered(
        name=NAME,
        version=1,
        artifact_sha256=ART1,
        artifact_size=12_345,
        format="lightgbm",
        feature_names=["income", "age", "debt"],
        metrics={"auc": 0.91, "logloss": 0.31},
        params={"num_leaves": 31, "objective": "binary"},
        lineage=lineage,
        num_trees=100,
    )
    return [by_ci(registered)]


def version_1_compiled_and_compliant() -> list[Step]:
    compiled = ev.VersionCompiled(
        name=NAME,
        version=1,
        library_sha256=LIB1,
        max_abs_diff=0.0,
        rows_checked=1000,
        compiler="gcc",
        flags=["-O3"],
        compile_seconds=2.5,
    )
    checked = ev.ComplianceChecked(
        name=NAME,
        version=1,
        passed=True,
        report_sha256=REP1,
        policy_version=0,
        metrics={"demographic_parity_difference": 0.03},
    )
    return [by_worker(compiled), by_worker(checked)]


def version_1_approved_by_alice_and_carol() -> list[Step]:
    """Bob approved too, then revoked his approval (with a pipe in the reason)."""
    return [approve("alice"), approve("bob"), revoke("bob", "needs | review"), approve("carol")]


def version_1_champion_in_production() -> list[Step]:
    promoted = ev.DeploymentChanged(
        name=NAME,
        environment="production",
        action="promotion",
        version=1,
        champion=1,
        gates=GATES_PASSED,
    )
    return [by_ci(promoted)]


def version_2_registered_and_compiled() -> list[Step]:
    registered = ev.VersionRegistered(
        name=NAME,
        version=2,
        artifact_sha256=ART2,
        artifact_size=23_456,
        format="lightgbm",
        feature_names=["income", "age", "debt"],
        metrics={"auc": 0.93},
    )
    compiled = ev.VersionCompiled(
        name=NAME, version=2, library_sha256=LIB2, max_abs_diff=0.0, rows_checked=1000
    )
    return [by_ci(registered), by_worker(compiled)]


def version_2_staging_champion_and_production_canary() -> list[Step]:
    staging = ev.DeploymentChanged(
        name=NAME, environment="staging", action="promotion", version=2, champion=2
    )
    canary = ev.DeploymentChanged(
        name=NAME,
        environment="production",
        action="promotion",
        version=2,
        champion=1,
        challenger=2,
        strategy="canary",
        traffic_percent=10.0,
        gates=GATES_PASSED,
    )
    return [by_ci(staging), by_ci(canary)]


def drift_on_both_versions() -> list[Step]:
    on_1 = ev.DriftDetected(
        name=NAME,
        version=1,
        statistic="psi",
        value=0.31,
        threshold=0.2,
        severity="warning",
        feature="income",
        environment="production",
    )
    on_2 = ev.DriftDetected(
        name=NAME, version=2, statistic="ks", value=0.5, threshold=0.1, severity="critical"
    )
    return [by_worker(on_1), by_worker(on_2)]


def an_experiment_of_2_against_1_ended_on_a_guardrail() -> list[Step]:
    """An A/B test of 2 against champion 1 in production: two looks, the second crossing the
    p99 latency guardrail, and its conclusion."""
    started = ev.ExperimentStarted(
        name=NAME,
        experiment_id="exp-1",
        environment="production",
        champion=1,
        challenger=2,
        traffic_percent=10.0,
        metric=ev.ExperimentMetric(name="default | 90d", direction="decrease"),
        guardrails=ev.Guardrails(max_error_rate=0.01, max_p99_latency_ms=5.0),
        minimum_detectable_effect=0.02,
        alpha=0.05,
        horizon_per_arm=20_000,
    )

    def look(outcomes: int, p99: float, p_value: float) -> ev.ExperimentUpdated:
        latency = ev.GuardrailCheck(name="p99_latency_ms", value=p99, limit=5.0, passed=p99 <= 5.0)
        return ev.ExperimentUpdated(
            name=NAME,
            experiment_id="exp-1",
            champion=ev.ArmSummary(
                version=1, predictions=9 * outcomes, outcomes=outcomes, mean=0.1, variance=0.09
            ),
            challenger=ev.ArmSummary(
                version=2, predictions=outcomes, outcomes=outcomes, mean=0.08, variance=0.07
            ),
            effect=-0.02,
            std_error=0.01,
            ci_low=None if outcomes < 500 else -0.05,
            ci_high=None if outcomes < 500 else 0.01,
            p_value=p_value,
            guardrails=[latency],
        )

    ended = ev.ExperimentEnded(
        name=NAME,
        experiment_id="exp-1",
        environment="production",
        outcome="guardrail_breach",
        effect=-0.02,
        p_value=0.4,
        reason="challenger 2 crossed a guardrail: p99_latency_ms 7.5 > 5",
    )
    return [
        by_ci(started),
        by_worker(look(300, 4.0, 1.0)),
        by_worker(look(800, 7.5, 0.4)),
        by_worker(ended),
    ]


def performance_and_data_quality_alerts() -> list[Step]:
    """A critical AUC drop on 2 and a null-rate alert on each version."""
    auc = ev.PerformanceAlert(
        name=NAME,
        version=2,
        environment="production",
        metric="auc",
        value=0.71,
        baseline=0.9,
        threshold=0.1,
        severity="critical",
        rows=5000,
        reason="auc 0.71 fell 0.19 below validation 0.9 (limit 0.1)",
    )
    nulls = [
        ev.DataQualityAlert(
            name=NAME,
            version=version,
            environment="production",
            check="null_rate",
            feature="income",
            value=0.3,
            baseline=0.01,
            threshold=0.1,
            severity="warning",
            rows=4000,
            reason=f"income null in 30% of version {version}'s rows (training 1%)",
        )
        for version in (1, 2)
    ]
    return [by_worker(auc), *(by_worker(n) for n in nulls)]


def given_a_registered_version() -> list[Step]:
    """Registered only: no build, no compliance, no decisions."""
    return [*model_registered(), *version_1_registered()]


def given_version_1_in_production_and_2_in_canary() -> list[Step]:
    """Version 1 approved and champion in production, version 2 its canary; both drifted."""
    return [
        *given_a_registered_version(),
        *version_1_compiled_and_compliant(),
        *version_1_approved_by_alice_and_carol(),
        *version_1_champion_in_production(),
        *version_2_registered_and_compiled(),
        *version_2_staging_champion_and_production_canary(),
        *drift_on_both_versions(),
    ]


def given_version_2_replaced_version_1_in_production() -> list[Step]:
    """The canary demoted, then version 2 promoted in full in its place."""
    demote = ev.DeploymentChanged(
        name=NAME, environment="production", action="demotion", version=2, champion=1
    )
    replace = ev.DeploymentChanged(
        name=NAME, environment="production", action="promotion", version=2, champion=2
    )
    return [
        *given_version_1_in_production_and_2_in_canary(),
        by_worker(demote),
        by_ci(replace),
    ]


def given_an_experiment_and_monitoring_alerts() -> list[Step]:
    """Version 2 under an experiment against 1 that a guardrail ended; performance and
    data-quality alerts."""
    return [
        *given_version_1_in_production_and_2_in_canary(),
        *an_experiment_of_2_against_1_ended_on_a_guardrail(),
        *performance_and_data_quality_alerts(),
    ]


def high_risk_policies() -> PolicyBook:
    """Policy version 3 for high risk: two approvals, compliance, AUC at least 0.8."""
    book = PolicyBook()
    policy = Policy(
        required_approvals=2,
        compliance_required=True,
        approval_expiry_days=90,
        metric_thresholds={"auc": Threshold(min=0.8)},
    )
    book.set("high", policy, 3)
    return book


def fold(steps: list[Step]) -> tuple[ModelState, list[RecordedEvent]]:
    """Fold the steps into a model state, and record them as the log would."""
    state: ModelState | None = None
    recorded = []
    for i, (event, actor, role) in enumerate(steps, start=1):
        at = T0 + timedelta(hours=i)
        context = EventContext(
            position=100 + i, recorded_at=at, actor=actor, role=role, stream_version=i
        )
        state = evolve(state, event, context)
        recorded.append(_recorded(i, at, event, actor, role))
    assert state is not None
    return state, recorded


def _recorded(i: int, at: datetime, event: ev.AnyEvent, actor: str, role: str) -> RecordedEvent:
    return RecordedEvent(
        position=100 + i,
        stream=f"model-{NAME}",
        version=i,
        event_id=uuid.uuid4(),
        recorded_at=at,
        event=event,
        meta=ev.EventMeta(actor=actor, role=role),
    )
