"""Deciders as given/when/then: given past events, when a command, then events or an error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from domain import commands as cmd
from domain import decide
from domain import events as ev
from domain.errors import Conflict, InvalidInput, NotFound
from domain.gates import lifecycle_state
from domain.handle import decide as when_command
from domain.model import evolve
from domain.policy import DEFAULT_POLICIES, Policy, Threshold
from domain.state import EventContext, ModelState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "fraud"


def facts(policy: Policy | None = None, policy_version: int = 0) -> cmd.Facts:
    """What a decision reads besides the stream: the time and the policy in force."""
    return cmd.Facts(now=T0, policy=policy or Policy(), policy_version=policy_version)


def given(*history: tuple[ev.Event, str]) -> ModelState | None:
    """Fold (event, actor) pairs into a model state."""
    state: ModelState | None = None
    for position, (event, actor) in enumerate(history, start=1):
        ctx = EventContext(
            position=position, recorded_at=T0 + timedelta(minutes=position), actor=actor, role="ci"
        )
        state = evolve(state, event, ctx)  # type: ignore[arg-type]
    return state


def registered(tier: str = "low") -> tuple[ev.Event, str]:
    return ev.ModelRegistered(name=NAME, risk_tier=tier), "pipeline"  # type: ignore[arg-type]


def version(number: int, auc: float = 0.9) -> tuple[ev.Event, str]:
    return (
        ev.VersionRegistered(
            name=NAME,
            version=number,
            artifact_sha256=f"{number:064x}",
            artifact_size=10,
            format="lightgbm",
            feature_names=["a", "b"],
            metrics={"auc": auc},
        ),
        "pipeline",
    )


def compiled(number: int, diff: float = 0.0) -> tuple[ev.Event, str]:
    return (
        ev.VersionCompiled(
            name=NAME,
            version=number,
            library_sha256=f"{number:064x}"[::-1],
            max_abs_diff=diff,
            rows_checked=100,
        ),
        "worker",
    )


def approved(
    number: int, approver: str, state: ModelState | None, *, days: int = 30
) -> tuple[ev.Event, str]:
    assert state is not None
    command = cmd.DecideVersion(name=NAME, version=number, approver=approver, decision="approve")
    events = when_command(command, state, facts(Policy(approval_expiry_days=days)))
    return events[0], approver


def deployed(
    number: int, env: str = "production", action: str = "promotion"
) -> tuple[ev.Event, str]:
    return ev.DeploymentChanged(
        name=NAME, environment=env, action=action, version=number, champion=number
    ), "pipeline"  # type: ignore[arg-type]


def when(fn: Callable[[], Sequence[ev.Event]]) -> Sequence[ev.Event]:
    return fn()


def test_registering_a_model_twice_is_a_conflict() -> None:
    state = given(registered())
    with pytest.raises(Conflict):
        when_command(cmd.RegisterModel(name=NAME, risk_tier="low"), state, facts())


def test_model_names_are_checked() -> None:
    with pytest.raises(InvalidInput):
        when_command(cmd.RegisterModel(name="Bad Name", risk_tier="low"), None, facts())


def test_a_version_gets_the_next_number_and_requests_its_compile() -> None:
    state = given(registered(), version(1))
    events = when(
        lambda: when_command(
            cmd.RegisterVersion(
                name=NAME,
                compile_job_id="job-1",
                artifact_sha256="e" * 64,
                artifact_size=5,
                format="lightgbm",
                model_feature_names=["x"],
            ),
            state,
            facts(),
        )
    )
    assert isinstance(events[0], ev.VersionRegistered) and events[0].version == 2
    assert events[1] == ev.JobRequested(job_id="job-1", kind="compile", name=NAME, version=2)


def test_feature_names_must_match_the_model_width() -> None:
    with pytest.raises(InvalidInput, match="2 names"):
        when_command(
            cmd.RegisterVersion(
                name=NAME,
                compile_job_id="j",
                artifact_sha256="e" * 64,
                artifact_size=5,
                format="lightgbm",
                model_feature_names=["x"],
                feature_names=["a", "b"],
            ),
            given(registered()),
            facts(),
        )


def test_the_registrar_may_not_approve() -> None:
    state = given(registered(), version(1), compiled(1))
    with pytest.raises(decide.FourEyes):
        approved(1, "pipeline", state)


def test_an_uncompiled_version_cannot_be_approved() -> None:
    with pytest.raises(Conflict, match="not compiled"):
        approved(1, "bob", given(registered(), version(1)))


def test_an_approval_binds_the_current_digests_and_expires() -> None:
    state = given(registered(), version(1), compiled(1))
    event = approved(1, "bob", state, days=10)[0]
    assert isinstance(event, ev.VersionApproved)
    assert event.artifact_sha256 == f"{1:064x}" and event.library_sha256 == f"{1:064x}"[::-1]
    assert event.expires_at == T0 + timedelta(days=10)


def test_high_risk_needs_two_approvers_and_expiry_undoes_them() -> None:
    state = given(registered("high"), version(1), compiled(1))
    state = given(
        registered("high"),
        version(1),
        compiled(1),
        approved(1, "bob", state),
        approved(1, "carol", state),
    )
    policy = Policy(required_approvals=2)
    assert state is not None
    assert lifecycle_state(state.versions[1], policy, T0) == "approved"
    assert lifecycle_state(state.versions[1], policy, T0 + timedelta(days=31)) == "validated"


def test_a_recompiled_library_voids_earlier_approvals() -> None:
    base = given(registered(), version(1), compiled(1))
    state = given(
        registered(), version(1), compiled(1), approved(1, "bob", base), compiled(1, diff=0.0)
    )
    assert state is not None
    state.versions[1].compiled.library_sha256 = "f" * 64  # type: ignore[union-attr]
    assert lifecycle_state(state.versions[1], Policy(), T0) == "validated"


def test_promotion_lists_every_unmet_gate() -> None:
    state = given(registered("medium"), version(1, auc=0.5))
    policy = Policy(metric_thresholds={"auc": Threshold(min=0.8)}, compliance_required=True)
    with pytest.raises(Conflict) as caught:
        when_command(
            cmd.ChangeDeployments(
                name=NAME, changes=[cmd.Promote(version=1, environment="production")]
            ),
            state,
            facts(policy, 3),
        )
    names = [g["name"] for g in caught.value.extra["unmet_gates"]]
    assert names == ["compiled", "metric:auc", "compliance", "approvals"]


def test_ungated_environments_need_only_a_compiled_active_version() -> None:
    state = given(registered(), version(1), compiled(1))
    events = when_command(
        cmd.ChangeDeployments(name=NAME, changes=[cmd.Promote(version=1, environment="staging")]),
        state,
        facts(DEFAULT_POLICIES["low"], 0),
    )
    assert isinstance(events[0], ev.DeploymentChanged) and events[0].champion == 1


def test_several_changes_are_decided_together() -> None:
    state = given(
        registered(), version(1), compiled(1), version(2), compiled(2), deployed(1, "staging")
    )
    events = when_command(
        cmd.ChangeDeployments(
            name=NAME,
            changes=[
                cmd.Promote(version=2, environment="staging", strategy="canary", traffic_percent=5),
                cmd.Promote(version=1, environment="qa"),
            ],
        ),
        state,
        facts(Policy(gated_environments=[]), 0),
    )
    assert [(e.environment, e.champion, e.challenger) for e in events] == [
        ("staging", 1, 2),
        ("qa", 1, None),
    ]  # type: ignore[attr-defined]


def test_a_canary_needs_a_champion_and_a_percentage() -> None:
    state = given(registered(), version(1), compiled(1))
    with pytest.raises(Conflict, match="needs a champion"):
        when_command(
            cmd.ChangeDeployments(
                name=NAME,
                changes=[
                    cmd.Promote(version=1, environment="qa", strategy="canary", traffic_percent=5)
                ],
            ),
            state,
            facts(Policy(), 0),
        )
    with pytest.raises(InvalidInput):
        when_command(
            cmd.ChangeDeployments(
                name=NAME, changes=[cmd.Promote(version=1, environment="qa", strategy="canary")]
            ),
            state,
            facts(Policy(), 0),
        )


ROLLBACK = cmd.Rollback(name=NAME, environment="production", reason="bad")


def test_rollback_walks_back_through_good_champions() -> None:
    history = [
        registered(),
        *(item for n in (1, 2, 3) for item in (version(n), compiled(n), deployed(n))),
    ]
    state = given(*history)
    first = when_command(ROLLBACK, state, facts())
    assert first[0].champion == 2  # type: ignore[attr-defined]
    state = given(*history, (first[0], "pipeline"))
    second = when_command(ROLLBACK, state, facts())
    assert second[0].champion == 1  # type: ignore[attr-defined]
    state = given(*history, (first[0], "pipeline"), (second[0], "pipeline"))
    with pytest.raises(Conflict, match="no earlier good champion"):
        when_command(ROLLBACK, state, facts())


def test_a_serving_version_cannot_be_retired() -> None:
    state = given(registered(), version(1), compiled(1), deployed(1))
    with pytest.raises(Conflict, match="still serves"):
        when_command(cmd.RetireVersion(name=NAME, version=1, reason="old"), state, facts())


def test_critical_drift_on_a_canary_demotes_it() -> None:
    state = given(
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
                traffic_percent=10,
            ),
            "pipeline",
        ),
    )
    alert = ev.DriftDetected(
        name=NAME, version=2, statistic="psi", value=0.5, threshold=0.2, severity="critical"
    )
    assert state is not None
    respond = cmd.RespondToDrift(name=NAME, alert=alert)
    actions = when_command(respond, state, facts())
    assert [(a.action, a.champion, a.challenger) for a in actions] == [("demotion", 1, None)]  # type: ignore[attr-defined]
    assert when_command(respond, state, facts(Policy(critical_drift_on_canary="none"))) == []


def test_unknown_model_and_version_are_not_found() -> None:
    with pytest.raises(NotFound):
        when_command(cmd.RetireVersion(name=NAME, version=1, reason="x"), None, facts())
    with pytest.raises(NotFound):
        when_command(
            cmd.RetireVersion(name=NAME, version=7, reason="x"), given(registered()), facts()
        )
