"""Outcome monitoring end to end: predictions scored over HTTP, labels sent days later as
feedback, a scheduled performance job per version on a real worker; a canary whose live AUC
collapses is alerted critically and demoted, caused by the alert; its champion is not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import add_version, promote, rows_with_missing, score
from tests.workers.job_kinds_givens import LOGGED
from tests.workers.jobs_helpers import run_worker
from workers.jobs.schedule import schedule_performance_checks

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, dispatch_jobs=True, job_timeout_seconds=120.0, performance_min_new_labels=40
    )


async def _scored(
    client: httpx.AsyncClient, scorer: dict[str, str]
) -> dict[int, list[tuple[str, float]]]:
    """(prediction id, score) by version, over enough batches that both arms have plenty."""
    served: dict[int, list[tuple[str, float]]] = {1: [], 2: []}
    for batch in range(80):
        answer = await score(client, scorer, "fraud", {"rows": rows_with_missing(5, seed=batch)})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        served[body["version"]] += zip(body["prediction_ids"], body["scores"], strict=True)
    return served


async def _label(
    client: httpx.AsyncClient,
    scorer: dict[str, str],
    served: list[tuple[str, float]],
    *,
    flip: bool,
) -> tuple[list[float], list[float]]:
    """Send a label per prediction, observed days later: the score's side of 0.5 (flipped:
    the opposite, so the version ranks every outcome backwards)."""
    scores, labels = [], []
    for prediction_id, value in served:
        label = float((value >= 0.5) != flip)
        body = {"prediction_id": prediction_id, "label": label, "observed_at": _now()}
        sent = await client.post("/v1/feedback", json=body, headers=scorer)
        assert sent.status_code == 202, sent.text
        scores.append(value)
        labels.append(label)
    return scores, labels


async def _old_predictions(
    resources: Resources, version: int, *, days: int
) -> list[tuple[str, float]]:
    """Predictions the scorer logged `days` ago (written as its log writes them)."""
    made = datetime.now(UTC) - timedelta(days=days)
    old = [(uuid.uuid4(), 0.1 + 0.8 * (i % 2)) for i in range(50)]
    records = [
        (pid, "fraud", "staging", version, "lib", "champion", str(value), None, made)
        for pid, value in old
    ]
    await resources.pool.copy_records_to_table("predictions", records=records, columns=LOGGED)
    return [(str(pid), value) for pid, value in old]


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_a_canary_whose_live_auc_collapses_is_alerted_and_demoted_by_the_alert(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, admin = await auth("ci"), await auth("admin")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    assert await add_version(client, ci, resources, "fraud", "seed0") == 1
    assert await add_version(client, ci, resources, "fraud", "seed1") == 2
    await promote(client, ci, "fraud", 1)
    await promote(client, ci, "fraud", 2, strategy="canary", traffic_percent=50)
    limits = {"performance": {"min_labels": 40}}
    assert (await client.put("/v1/policies/low", json=limits, headers=admin)).status_code == 200
    await resources.scoring.scorer.refresh()
    scorer = await auth("scorer")
    served = await _scored(client, scorer)
    assert len(served[1]) >= 40 and len(served[2]) >= 40
    champion = await _label(client, scorer, served[1], flip=False)
    canary = await _label(client, scorer, served[2], flip=True)
    # predictions of version 1 older than the window, labelled backwards: left out
    await _label(client, scorer, await _old_predictions(resources, 1, days=30), flip=True)

    assert await schedule_performance_checks(resources) == 2
    # the two checks, and the compiles registering requested
    assert await run_worker(settings) == (4, 0)
    assert await schedule_performance_checks(resources) == 0  # nothing new since

    recorded = await resources.store.read_stream(model_stream("fraud"))
    checks = {
        r.event.version: r.event for r in recorded if isinstance(r.event, ev.PerformanceChecked)
    }
    assert checks[1].severity == "info" and checks[1].rows == len(served[1])
    assert checks[2].severity == "critical" and checks[2].rows == len(served[2])
    for version, (scores, labels) in ((1, champion), (2, canary)):
        expected = metrics.roc_auc_score(labels, scores)
        assert checks[version].metrics["auc"] == pytest.approx(expected, abs=1e-12)
        assert checks[version].baseline == {"auc": 0.9}
    assert checks[2].metrics["brier"] == pytest.approx(
        metrics.brier_score_loss(canary[1], canary[0]), abs=1e-12
    )
    alerts = [r for r in recorded if isinstance(r.event, ev.PerformanceAlert)]
    assert {(a.event.version, a.event.metric, a.event.severity) for a in alerts} >= {
        (2, "auc", "critical")
    }
    assert all(a.event.version == 2 and a.event.environment == "staging" for a in alerts)
    [demotion] = [
        r
        for r in recorded
        if isinstance(r.event, ev.DeploymentChanged) and r.event.action == "demotion"
    ]
    assert demotion.event.version == 2  # type: ignore[attr-defined]
    worst = next(a for a in alerts if a.event.severity == "critical")
    assert demotion.meta.causation_id == str(worst.event_id)
    assert demotion.meta.actor == "system:performance-schedule"
    model: dict[str, Any] = (await client.get("/v1/models/fraud", headers=ci)).json()
    staging = model["deployments"]["staging"]
    assert staging["champion"] == 1 and staging.get("challenger") is None
    assert np.isfinite(checks[2].metrics["ece"])

    # operators see the latest live values of what serves (version 2 serves no longer)
    scraped = (await client.get("/metrics")).text
    values = {
        (s.labels["version"], s.labels["metric"]): s.value
        for family in text_string_to_metric_families(scraped)
        if family.name == "model_ledger_performance_value"
        for s in family.samples
        if s.labels["model"] == "fraud" and s.labels["environment"] == "staging"
    }
    assert values[("1", "auc")] == checks[1].metrics["auc"]
    assert not any(version == "2" for version, _ in values)
