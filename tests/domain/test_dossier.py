"""The dossier (model card) of a version, built from a folded history: JSON and Markdown."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from app.services.dossier import Dossier, build_dossier, dossier_markdown
from domain.errors import NotFound
from tests.domain.dossier_givens import (
    ART1,
    LIB1,
    NAME,
    NOW,
    REP1,
    T0,
    Step,
    fold,
    given_a_registered_version,
    given_an_experiment_and_monitoring_alerts,
    given_version_1_in_production_and_2_in_canary,
    given_version_2_replaced_version_1_in_production,
    high_risk_policies,
)


def dossier(steps: list[Step], number: int, now: datetime = NOW) -> Dossier:
    state, recorded = fold(steps)
    return build_dossier(
        state, number, high_risk_policies(), recorded, now=now, as_of_position=recorded[-1].position
    )


def as_json(d: Dossier) -> Any:
    return msgspec.json.decode(msgspec.json.encode(d))


def test_dossier_json_of_the_production_version() -> None:
    steps = given_version_1_in_production_and_2_in_canary()

    data = as_json(dossier(steps, 1))

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
    steps = given_version_1_in_production_and_2_in_canary()

    d = dossier(steps, 2)

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
    steps = given_version_2_replaced_version_1_in_production()

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
    steps = given_version_1_in_production_and_2_in_canary()

    d = dossier(steps, 1, now=T0 + timedelta(days=91))

    assert d.version.state == "validated"
    assert [a.counts for a in d.approvals] == [False, False, False]
    assert {g.name: g.passed for g in d.gates}["approvals"] is False


def test_unknown_version_is_not_found() -> None:
    state, recorded = fold(given_version_1_in_production_and_2_in_canary())

    with pytest.raises(NotFound):
        build_dossier(state, 9, high_risk_policies(), recorded, now=NOW, as_of_position=1)


def test_markdown_model_card() -> None:
    steps = given_version_1_in_production_and_2_in_canary()

    md = dossier_markdown(dossier(steps, 1))

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
    steps = given_a_registered_version()

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
        "Performance alerts",
        "Data-quality alerts",
        "Experiments",
        "Experiment looks",
    ):
        assert f"## {title}\n\nnone\n" in md + "\n"


def test_dossier_json_has_experiments_their_looks_and_monitoring_alerts() -> None:
    steps = given_an_experiment_and_monitoring_alerts()

    v1, v2 = as_json(dossier(steps, 1)), as_json(dossier(steps, 2))

    # the experiment is in both versions' dossiers, each with its role, looks and conclusion
    assert [(x["experiment_id"], x["role"]) for x in v1["experiments"]] == [("exp-1", "champion")]
    (x,) = v2["experiments"]
    assert (x["role"], x["champion"], x["challenger"], x["environment"]) == (
        "challenger",
        1,
        2,
        "production",
    )
    assert (x["metric"], x["metric_kind"], x["direction"]) == (
        "default | 90d",
        "binary",
        "decrease",
    )
    assert (x["status"], x["winner"]) == ("guardrail_breach", None)
    assert x["conclusion"] == "challenger 2 crossed a guardrail: p99_latency_ms 7.5 > 5"
    assert x["started_by"] == "ci-bot" and x["ended_at"] is not None
    looks = x["looks"]
    assert [(k["champion_outcomes"], k["p_value"], k["breached"]) for k in looks] == [
        (300, 1.0, []),
        (800, 0.4, ["p99_latency_ms 7.5 > 5"]),
    ]
    assert (looks[0]["ci_low"], looks[1]["ci_low"]) == (None, -0.05)
    assert looks[0]["position"] < looks[1]["position"]
    # alerts are bound to the version that served: the AUC drop is 2's only
    assert v1["performance_alerts"] == []
    (auc,) = v2["performance_alerts"]
    assert (auc["metric"], auc["severity"], auc["value"], auc["baseline"]) == (
        "auc",
        "critical",
        0.71,
        0.9,
    )
    assert auc["rows"] == 5000 and "below validation" in auc["reason"]
    for data, version in ((v1, 1), (v2, 2)):
        (nulls,) = data["data_quality_alerts"]
        assert (nulls["check"], nulls["feature"], nulls["severity"]) == (
            "null_rate",
            "income",
            "warning",
        )
        assert f"version {version}'s rows" in nulls["reason"]


def test_markdown_card_shows_experiments_looks_and_monitoring_alerts() -> None:
    steps = given_an_experiment_and_monitoring_alerts()

    md = dossier_markdown(dossier(steps, 2))

    for title in ("Performance alerts", "Data-quality alerts", "Experiments", "Experiment looks"):
        assert f"## {title}\n\n|" in md
    assert "| critical | auc | 0.71 | 0.9 | 0.1 | 5000 | production |" in md
    assert "| warning | null_rate | income | 0.3 | 0.01 | 0.1 | 4000 |" in md
    assert (
        "| exp-1 | production | challenger | 1 | 2 at 10% | default \\| 90d (binary, decrease) |"
        in md
    )
    assert "guardrail_breach | challenger 2 crossed a guardrail: p99_latency_ms 7.5 > 5 |" in md
    assert "| 300 / 300 | 0.1 / 0.08 | -0.02 | [-inf, +inf] | 1 | — |" in md
    assert "| 800 / 800 | 0.1 / 0.08 | -0.02 | [-0.05, 0.01] | 0.4 | p99_latency_ms 7.5 > 5 |" in md
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        widths = {line.replace("\\|", "").count("|") for line in rows}
        assert len(widths) <= 1, block
