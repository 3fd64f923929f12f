"""The dossier (model card) of a version, built from a folded history: JSON and Markdown."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from app.services.dossier import Dossier, build_dossier, dossier_markdown
from app.store.codec import RecordedEvent
from domain import events as ev
from domain.errors import NotFound
from domain.model import evolve
from domain.policy import GateResult, Policy, PolicyBook, Threshold
from domain.state import EventContext, ModelState

NAME = "credit-risk"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
ART1, ART2 = "a1" * 32, "a2" * 32
LIB1, LIB2 = "11" * 32, "22" * 32
REP1 = "r1" * 32

# (event, actor, role) in log order; positions and times are assigned by `fold`
Step = tuple[ev.AnyEvent, str, str]


def approve(approver: str, version: int = 1) -> Step:
    return (
        ev.VersionApproved(
            name=NAME,
            version=version,
            approver=approver,
            comment=f"ok by {approver}",
            policy_version=0,
            artifact_sha256=ART1,
            library_sha256=LIB1,
            report_sha256s=[REP1],
            expires_at=T0 + timedelta(days=90),
        ),
        approver,
        "approver",
    )


def history() -> list[Step]:
    passed = [GateResult(name="approvals", passed=True, detail="2 of 2 required approvals")]
    return [
        (
            ev.ModelRegistered(
                name=NAME,
                risk_tier="high",
                description="Scores loans | consumer credit",
                owner="risk-team",
                tags=["credit", "tabular"],
                sensitive_features=["age", "sex"],
            ),
            "admin",
            "admin",
        ),
        (
            ev.VersionRegistered(
                name=NAME,
                version=1,
                artifact_sha256=ART1,
                artifact_size=12_345,
                format="lightgbm",
                feature_names=["income", "age", "debt"],
                metrics={"auc": 0.91, "logloss": 0.31},
                params={"num_leaves": 31, "objective": "binary"},
                lineage=ev.Lineage(
                    git_commit="abc123",
                    ci_run_url="https://ci.example/run/7",
                    dataset_sha256="d5" * 32,
                ),
                num_trees=100,
            ),
            "ci-bot",
            "ci",
        ),
        (
            ev.VersionCompiled(
                name=NAME,
                version=1,
                library_sha256=LIB1,
                max_abs_diff=0.0,
                rows_checked=1000,
                compiler="gcc",
                flags=["-O3"],
                compile_seconds=2.5,
            ),
            "worker",
            "ci",
        ),
        (
            ev.ComplianceChecked(
                name=NAME,
                version=1,
                passed=True,
                report_sha256=REP1,
                policy_version=0,
                metrics={"demographic_parity_difference": 0.03},
            ),
            "worker",
            "ci",
        ),
        approve("alice"),
        approve("bob"),
        (
            ev.ApprovalRevoked(name=NAME, version=1, approver="bob", reason="needs | review"),
            "bob",
            "approver",
        ),
        approve("carol"),
        (
            ev.DeploymentChanged(
                name=NAME,
                environment="production",
                action="promotion",
                version=1,
                champion=1,
                gates=passed,
            ),
            "ci-bot",
            "ci",
        ),
        (
            ev.VersionRegistered(
                name=NAME,
                version=2,
                artifact_sha256=ART2,
                artifact_size=23_456,
                format="lightgbm",
                feature_names=["income", "age", "debt"],
                metrics={"auc": 0.93},
            ),
            "ci-bot",
            "ci",
        ),
        (
            ev.VersionCompiled(
                name=NAME, version=2, library_sha256=LIB2, max_abs_diff=0.0, rows_checked=1000
            ),
            "worker",
            "ci",
        ),
        (
            ev.DeploymentChanged(
                name=NAME,
                environment="staging",
                action="promotion",
                version=2,
                champion=2,
            ),
            "ci-bot",
            "ci",
        ),
        (
            ev.DeploymentChanged(
                name=NAME,
                environment="production",
                action="promotion",
                version=2,
                champion=1,
                challenger=2,
                strategy="canary",
                traffic_percent=10.0,
                gates=passed,
            ),
            "ci-bot",
            "ci",
        ),
        (
            ev.DriftDetected(
                name=NAME,
                version=1,
                statistic="psi",
                value=0.31,
                threshold=0.2,
                severity="warning",
                feature="income",
                environment="production",
            ),
            "worker",
            "ci",
        ),
        (
            ev.DriftDetected(
                name=NAME, version=2, statistic="ks", value=0.5, threshold=0.1, severity="critical"
            ),
            "worker",
            "ci",
        ),
    ]


def fold(steps: list[Step]) -> tuple[ModelState, list[RecordedEvent]]:
    """Fold the steps into a model state, and record them as the log would."""
    state: ModelState | None = None
    recorded = []
    for i, (event, actor, role) in enumerate(steps, start=1):
        at = T0 + timedelta(hours=i)
        state = evolve(
            state,
            event,
            EventContext(
                position=100 + i, recorded_at=at, actor=actor, role=role, stream_version=i
            ),
        )
        recorded.append(
            RecordedEvent(
                position=100 + i,
                stream=f"model-{NAME}",
                version=i,
                event_id=uuid.uuid4(),
                recorded_at=at,
                event=event,
                meta=ev.EventMeta(actor=actor, role=role),
            )
        )
    assert state is not None
    return state, recorded


def policies() -> PolicyBook:
    book = PolicyBook()
    book.set(
        "high",
        Policy(
            required_approvals=2,
            compliance_required=True,
            approval_expiry_days=90,
            metric_thresholds={"auc": Threshold(min=0.8)},
        ),
        3,
    )
    return book


def dossier(steps: list[Step], number: int, now: datetime = NOW) -> Dossier:
    state, recorded = fold(steps)
    return build_dossier(
        state, number, policies(), recorded, now=now, as_of_position=recorded[-1].position
    )


def as_json(d: Dossier) -> Any:
    return msgspec.json.decode(msgspec.json.encode(d))


def test_dossier_json_of_the_production_version() -> None:
    data = as_json(dossier(history(), 1))

    assert data["model"] == {
        "name": NAME,
        "risk_tier": "high",
        "owner": "risk-team",
        "description": "Scores loans | consumer credit",
        "tags": ["credit", "tabular"],
        "sensitive_features": ["age", "sex"],
    }
    version = data["version"]
    assert version["number"] == 1
    assert version["state"] == "approved"
    assert version["artifact_sha256"] == ART1
    assert version["registered_by"] == "ci-bot"
    assert version["num_trees"] == 100
    assert data["lineage"]["git_commit"] == "abc123"
    assert data["metrics"] == {"auc": 0.91, "logloss": 0.31}
    assert data["params"] == {"num_leaves": 31, "objective": "binary"}
    assert data["compiled"]["library_sha256"] == LIB1
    assert data["compiled"]["rows_checked"] == 1000
    assert data["compliance"]["passed"] is True
    assert data["compliance"]["report_sha256"] == REP1
    assert data["policy"]["version"] == 3
    assert data["policy"]["policy"]["required_approvals"] == 2
    assert data["as_of"] == {"position": 115, "time": "2025-03-11T09:00:00Z"}

    gates = {g["name"]: g["passed"] for g in data["gates"]}
    assert gates == {
        "not_retired": True,
        "compiled": True,
        "metric:auc": True,
        "compliance": True,
        "approvals": True,
    }
    approvals = data["approvals"]
    assert [(a["approver"], a["revoked"], a["counts"]) for a in approvals] == [
        ("alice", False, True),
        ("bob", True, False),
        ("carol", False, True),
    ]
    assert approvals[1]["revoked_reason"] == "needs | review"
    assert approvals[0]["library_sha256"] == LIB1
    assert approvals[0]["report_sha256s"] == [REP1]

    deployments = data["deployments"]
    assert [(d["environment"], d["strategy"], d["role_after"]) for d in deployments] == [
        ("production", "full", "champion"),
        ("production", "canary", "champion"),
    ]
    assert deployments[0]["actor"] == "ci-bot"
    assert deployments[0]["gates_passed"] is True
    assert deployments[1]["challenger"] == 2
    assert deployments[1]["traffic_percent"] == 10.0
    assert data["currently_serving"] == [
        {
            "environment": "production",
            "role": "champion",
            "strategy": "canary",
            "traffic_percent": 10.0,
        }
    ]
    assert [(a["statistic"], a["feature"], a["severity"]) for a in data["drift"]] == [
        ("psi", "income", "warning")
    ]


def test_dossier_of_the_canary_version() -> None:
    d = dossier(history(), 2)

    assert d.version.state == "compiled"
    assert d.compliance is None
    assert d.approvals == []
    failed = {g.name for g in d.gates if not g.passed}
    assert failed == {"compliance", "approvals"}
    assert [(e.environment, e.action, e.role_after) for e in d.deployments] == [
        ("staging", "promotion", "champion"),
        ("production", "promotion", "challenger"),
    ]
    assert d.deployments[0].gates_passed is None  # ungated environment: nothing recorded
    assert [(s.environment, s.role) for s in d.currently_serving] == [
        ("production", "challenger"),
        ("staging", "champion"),
    ]
    assert [(a.statistic, a.severity) for a in d.drift] == [("ks", "critical")]


def test_history_includes_the_change_that_replaced_the_version() -> None:
    demote = ev.DeploymentChanged(
        name=NAME, environment="production", action="demotion", version=2, champion=1
    )
    replace = ev.DeploymentChanged(
        name=NAME, environment="production", action="promotion", version=2, champion=2
    )
    steps = [*history(), (demote, "worker", "ci"), (replace, "ci-bot", "ci")]

    v1, v2 = dossier(steps, 1), dossier(steps, 2)

    assert [(e.action, e.role_after) for e in v1.deployments][-2:] == [
        ("demotion", "champion"),
        ("promotion", None),
    ]
    assert v1.currently_serving == []
    assert [(e.action, e.role_after) for e in v2.deployments][-2:] == [
        ("demotion", None),
        ("promotion", "champion"),
    ]


def test_expired_approvals_no_longer_count() -> None:
    d = dossier(history(), 1, now=T0 + timedelta(days=91))

    assert d.version.state == "validated"
    assert [a.counts for a in d.approvals] == [False, False, False]
    assert {g.name: g.passed for g in d.gates}["approvals"] is False


def test_unknown_version_is_not_found() -> None:
    state, recorded = fold(history())
    with pytest.raises(NotFound):
        build_dossier(state, 9, policies(), recorded, now=NOW, as_of_position=1)


def test_markdown_model_card() -> None:
    md = dossier_markdown(dossier(history(), 1))

    assert md.startswith(f"# Model card: {NAME} version 1\n")
    assert "| State | approved |" in md
    assert LIB1 in md
    assert "| Parity within limit | ✅ |" in md
    for name in ("alice", "bob", "carol"):
        assert f"| {name} | approve |" in md
    assert "yes: needs \\| review" in md
    assert "Scores loans \\| consumer credit" in md
    assert "| not_retired | ✅ |" in md
    assert "| approvals | ✅ |" in md
    assert "production" in md
    assert "canary 10%" in md
    assert "| psi | income |" in md
    assert "## Drift incidents" in md
    # every table row has as many cells as its header: escaped pipes do not split cells
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        widths = {line.replace("\\|", "").count("|") for line in rows}
        assert len(widths) <= 1, block


def test_markdown_empty_sections_say_none() -> None:
    steps = history()[:2]  # registered only: no build, no compliance, no decisions
    d = dossier(steps, 1)
    md = dossier_markdown(d)

    assert d.version.state == "registered"
    assert "| compiled | ❌ | no certified native build yet |" in md
    for title in (
        "Native build and parity certificate",
        "Compliance",
        "Approvals",
        "Deployment history",
        "Drift incidents",
    ):
        assert f"## {title}\n\nnone\n" in md + "\n"
