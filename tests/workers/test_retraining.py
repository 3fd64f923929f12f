"""Retraining on policy end to end, with real arq burst workers on real Redis: a drift check's
critical alerts → one train job on the named dataset's latest version with the serving
version's parameters → a new version with lineage pointing at the alert → compiled and
checked for fairness → waiting for approvals, deployed nowhere. Decided once, however many
reactors run and however often they start over."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import msgspec
import pytest

from app.resources import Resources, open_resources
from app.services.retraining import CHECKPOINT
from app.settings import Settings
from domain import events as ev
from tests.conftest import TokenFactory
from tests.workers.job_kinds_givens import Ledger, training
from tests.workers.jobs_helpers import job_status
from workers.ml import demo_data

pytestmark = pytest.mark.processes

ROWS = 4_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=300.0)


@pytest.fixture
async def ledger(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> Ledger:
    return Ledger(settings, client, await auth("ci"), resources, auth)


async def _upload(ledger: Ledger, name: str | None, seed: int, shift: float = 0.0) -> str:
    """Demo transactions uploaded (under `name`, when given); their digest."""
    data = demo_data.parquet_bytes(demo_data.fraud_transactions(ROWS, seed=seed, shift=shift))
    files: dict[str, Any] = {"file": ("t.parquet", io.BytesIO(data), "application/octet-stream")}
    if name is not None:
        files["name"] = (None, name)
    uploaded = await ledger.client.post("/v1/datasets", files=files, headers=ledger.ci)
    assert uploaded.status_code == 201, uploaded.text
    digest: str = uploaded.json()["sha256"]
    return digest


async def _given_version_1_serving_in_staging_with_a_retraining_policy(ledger: Ledger) -> None:
    model = {"name": "fraud", "risk_tier": "medium", "sensitive_features": ["age_band"]}
    assert (await ledger.client.post("/v1/models", json=model, headers=ledger.ci)).is_success
    first = await _upload(ledger, "transactions", seed=11)
    await _upload(ledger, "transactions-eval", seed=12)
    await ledger.job(**training(first, seed=1))
    await ledger.run()
    await ledger.promote({"version": 1, "environment": "staging"})
    policy = {
        "dataset": "transactions",
        "environments": ["staging"],
        "evaluation_dataset": "transactions-eval",
    }
    put = await ledger.client.put(
        "/v1/models/fraud/retraining-policy", json=policy, headers=ledger.ci
    )
    assert put.status_code == 200, put.text


async def test_a_critical_drift_check_retrains_once_and_the_version_waits_for_approvals(
    ledger: Ledger, settings: Settings
) -> None:
    await _given_version_1_serving_in_staging_with_a_retraining_policy(ledger)
    # given: fresher training data uploaded under the name since version 1 was trained
    latest = await _upload(ledger, "transactions", seed=21)

    # when: a drift check of staging finds critical drift (an alert per drifting feature)
    shifted = await _upload(ledger, None, seed=31, shift=1.0)
    check = await ledger.job(
        kind="drift", params={"environment": "staging", "dataset_sha256": shifted}
    )
    await ledger.run()
    await ledger.resources.retraining.react()
    await ledger.run()

    # then: one retraining, caused by the check's first critical alert
    alerts = [r for r in await ledger.events(ev.DriftDetected) if r.event.job_id == check]
    critical = [a for a in alerts if a.event.severity == "critical"]
    assert len(critical) >= 2, "the shifted window drifts on several features"
    [triggered] = await ledger.events(ev.RetrainingTriggered)
    decision = triggered.event
    assert triggered.meta.causation_id == str(critical[0].event_id)
    assert triggered.meta.actor == "system:retraining"
    assert (decision.parent_version, decision.dataset_version) == (1, 2)
    assert decision.dataset_sha256 == latest
    # the train job registered version 2 with lineage pointing at the alert
    status = await job_status(ledger.client, ledger.ci, ledger.resources, decision.job_id)
    assert status["status"] == "succeeded", status
    registered = {r.event.version: r for r in await ledger.events(ev.VersionRegistered)}
    child, parent = registered[2].event, registered[1].event
    assert child.lineage.triggered_by == str(critical[0].event_id)
    assert (child.lineage.parent_version, child.lineage.dataset_sha256) == (1, latest)
    assert (child.lineage.dataset, child.lineage.dataset_version) == ("transactions", 2)
    assert child.feature_names == parent.feature_names
    for kept in ("kind", "seed", "num_trees", "features", "categorical"):
        assert child.params[kept] == parent.params[kept], kept
    # compiled and checked for fairness on the evaluation dataset (the tier requires it)
    assert 2 in {r.event.version for r in await ledger.events(ev.VersionCompiled)}
    assert 2 in {r.event.version for r in await ledger.events(ev.ComplianceChecked)}
    await _the_version_waits_for_approvals_and_serves_nowhere(ledger)
    await _the_audit_trail_shows_the_chain(ledger, critical[0], triggered)
    await _deciding_again_anywhere_appends_nothing(ledger, settings)


async def _the_version_waits_for_approvals_and_serves_nowhere(ledger: Ledger) -> None:
    version = (await ledger.client.get("/v1/models/fraud/versions/2", headers=ledger.ci)).json()
    assert version["state"] in ("compiled", "validated"), version["state"]
    assert version["lineage"]["triggered_by"] and version["lineage"]["parent_version"] == 1
    plan = await ledger.client.post(
        "/v1/models/fraud/promotions",
        json={"version": 2, "environment": "production", "dry_run": True},
        headers=ledger.ci,
    )
    assert plan.status_code == 200 and plan.json()["allowed"] is False
    unmet = {g["name"] for g in plan.json()["gates"] if not g["passed"]}
    assert "approvals" in unmet, plan.json()
    model = (await ledger.client.get("/v1/models/fraud", headers=ledger.ci)).json()
    assert set(model["deployments"]) == {"staging"}
    staging = model["deployments"]["staging"]
    assert (staging["champion"], staging["challenger"]) == (1, None)
    assert not [r for r in await ledger.events(ev.DeploymentChanged) if r.event.version == 2], (
        "the retraining chain deployed its version"
    )


async def _the_audit_trail_shows_the_chain(ledger: Ledger, alert: Any, triggered: Any) -> None:
    """version.registered ← job.requested (train) ← drift.detected, as an auditor reads it."""
    auditor = await ledger.auth("auditor")
    history = await ledger.client.get("/v1/models/fraud/history", headers=auditor)
    assert history.status_code == 200, history.text
    by_id = {e["event_id"]: e for e in history.json()["events"]}
    registered = next(
        e for e in by_id.values() if e["type"] == "version.registered" and e["data"]["version"] == 2
    )
    request = by_id[registered["meta"]["causation_id"]]
    assert request["type"] == "job.requested" and request["data"]["kind"] == "train"
    assert request["data"]["job_id"] == triggered.event.job_id
    assert request["meta"]["causation_id"] == str(alert.event_id)
    assert by_id[str(triggered.event_id)]["meta"]["causation_id"] == str(alert.event_id)
    assert by_id[str(alert.event_id)]["type"] == "drift.detected"
    assert registered["meta"]["actor"] == "system:retraining"
    # the model's retraining policy lists the decision
    policy = await ledger.client.get("/v1/models/fraud/retraining-policy", headers=auditor)
    [decision] = policy.json()["decisions"]
    assert (decision["outcome"], decision["job_id"]) == ("triggered", triggered.event.job_id)


async def _deciding_again_anywhere_appends_nothing(ledger: Ledger, settings: Settings) -> None:
    head, _ = await ledger.resources.store.head()
    # a restart before the checkpoint moved, with two processes reacting at once
    await ledger.resources.pool.execute(
        "UPDATE projection_checkpoints SET position = 0 WHERE name = $1", CHECKPOINT
    )
    async with open_resources(settings) as other:
        await asyncio.gather(ledger.resources.retraining.react(), other.retraining.react())
    assert (await ledger.resources.store.head())[0] == head
    assert len(await ledger.events(ev.RetrainingTriggered)) == 1
