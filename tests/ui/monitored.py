"""A monitored model for the console's tests: the console story plus drift checks, alerts,
an experiment with looks, logged predictions and a stored compliance report."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import msgspec

from app.resources import Resources
from domain import events as ev
from domain.decide import model_stream
from tests.ui.console import HOSTILE, story
from workers.ml.compliance import check_compliance

WORKER = ev.EventMeta(actor="worker:monitor", role="admin")


def report(group: str = "B") -> bytes:
    """A real fairness report: group A selects 2 of 4 (TPR 2/3), `group` 1 of 4 (TPR 1/2)."""
    return check_compliance(
        [1, 1, 0, 1, 1, 1, 0, 0],
        [0.9, 0.8, 0.2, 0.1, 0.9, 0.1, 0.1, 0.1],
        {"region": ["A"] * 4 + [group] * 4},
        threshold=0.5,
    ).to_json()


async def _append(resources: Resources, name: str, *events: ev.Event) -> None:
    await resources.store.append(
        model_stream(name), list(events), meta=WORKER, expected_version=None
    )
    await resources.projector.catch_up()


async def _predict(
    resources: Resources, version: int, score: object, *, days_ago: float = 0.0
) -> None:
    await resources.pool.execute(
        "INSERT INTO predictions (prediction_id, name, environment, version, library_sha256,"
        " arm, score, created_at) VALUES ($1, 'fraud', 'staging', $2, 'x', 'champion', $3, $4)",
        uuid.uuid4(),
        version,
        msgspec.json.encode(score).decode(),
        resources.clock() - timedelta(days=days_ago),
    )


async def monitored(
    client: httpx.AsyncClient, resources: Resources, ci: dict[str, str]
) -> dict[str, int]:
    """The console story, then: v3 a 20% canary in staging beside champion v1, two drift
    checks, alerts (one open, one closed by a later clean check, one on a version that no
    longer serves), an experiment with two looks, predictions of both arms, and a compliance
    report of v3 whose group and feature names are hostile."""
    told = await story(client, resources, ci)
    v1, v2, v3 = told["v1"], told["v2"], told["v3"]
    canary = await client.post(
        "/v1/models/fraud/promotions",
        json={"version": v3, "environment": "staging", "strategy": "canary", "traffic_percent": 20},
        headers=ci,
    )
    assert canary.status_code == 201, canary.text
    drift = {"rows": 500, "report_sha256": "d" * 64, "source": "log", "environment": "staging"}
    await _append(
        resources,
        "fraud",
        ev.DriftChecked(
            name="fraud",
            version=v1,
            severity="info",
            features={"amount": {"psi": 0.05, "ks": 0.01}, HOSTILE: {"psi": 0.3}},
            **drift,
        ),
        ev.DriftChecked(
            name="fraud",
            version=v1,
            severity="warning",
            features={"amount": {"psi": 0.12}},
            **drift,
        ),
    )
    perf = {"environment": "staging", "rows": 300}
    await _append(
        resources,
        "fraud",
        ev.PerformanceChecked(
            name="fraud", version=v1, severity="critical", window_days=7, task="binary", **perf
        ),
        ev.PerformanceAlert(
            name="fraud",
            version=v1,
            metric="auc",
            value=0.61,
            baseline=0.8,
            threshold=0.1,
            severity="critical",
            reason=f"auc fell {HOSTILE}",
            **perf,
        ),
        ev.DataQualityChecked(name="fraud", version=v1, severity="warning", **perf),
        ev.DataQualityAlert(
            name="fraud",
            version=v1,
            check="null_rate",
            value=0.2,
            baseline=0.0,
            threshold=0.05,
            severity="warning",
            reason="closed later",
            feature="amount",
            **perf,
        ),
        ev.DataQualityChecked(name="fraud", version=v1, severity="info", **perf),
        ev.PerformanceChecked(
            name="fraud", version=v2, severity="warning", window_days=7, task="binary", **perf
        ),
        ev.PerformanceAlert(
            name="fraud",
            version=v2,
            metric="brier",
            value=0.3,
            baseline=0.1,
            threshold=0.1,
            severity="warning",
            reason="v2 no longer serves",
            **perf,
        ),
    )
    started = ev.ExperimentStarted(
        name="fraud",
        experiment_id="e0000000-0000-0000-0000-000000000001",
        environment="staging",
        champion=v1,
        challenger=v3,
        traffic_percent=20,
        metric=ev.ExperimentMetric(name=f"conversion {HOSTILE}"),
        guardrails=ev.Guardrails(),
        minimum_detectable_effect=0.02,
        alpha=0.05,
        horizon_per_arm=5000,
    )

    def arm(version: int, outcomes: int, mean: float) -> ev.ArmSummary:
        return ev.ArmSummary(
            version=version, predictions=outcomes, outcomes=outcomes, mean=mean, variance=0.2
        )

    looks = [
        ev.ExperimentUpdated(
            name="fraud",
            experiment_id=started.experiment_id,
            champion=arm(v1, 1, 0.1),
            challenger=arm(v3, 1, 0.2),
            effect=0.1,
            std_error=0.5,
            ci_low=None,
            ci_high=None,
            p_value=1.0,
        ),
        ev.ExperimentUpdated(
            name="fraud",
            experiment_id=started.experiment_id,
            champion=arm(v1, 400, 0.1),
            challenger=arm(v3, 100, 0.15),
            effect=0.05,
            std_error=0.02,
            ci_low=-0.01,
            ci_high=0.11,
            p_value=0.2,
        ),
    ]
    await _append(resources, "fraud", started, *looks)
    for score in (0.05, 0.15, 0.15, 0.95):
        await _predict(resources, v1, score)
    for score in (0.55, 0.95):
        await _predict(resources, v3, score)
    await _predict(resources, v1, 0.5, days_ago=8)  # outside the window
    await _predict(resources, v1, [0.1, 0.9])  # several outputs: not a score to bin
    stored = await resources.artifacts.put_bytes(report(HOSTILE))
    await _append(
        resources,
        "fraud",
        ev.ComplianceChecked(
            name="fraud",
            version=v3,
            passed=False,
            report_sha256=stored.sha256,
            policy_version=0,
            metrics={"region.demographic_parity_ratio": 0.5},
        ),
    )
    return told
