"""The retraining reactor on the real log (no worker): which alerts become a train request,
which a recorded skip, which nothing; and its checkpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.resources import Resources
from app.services import retraining
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version

CSV = b"amount,age,hour,merchant,label\n1.0,30,4,2,0\n2.0,41,5,1,1\n"


async def _alert(
    client: httpx.AsyncClient, ci: dict[str, str], name: str, severity: str
) -> httpx.Response:
    body = {
        "version": 1,
        "statistic": "psi",
        "value": 0.7,
        "threshold": 0.25,
        "severity": severity,
        "feature": "amount",
        "environment": "production",
    }
    response = await client.post(f"/v1/models/{name}/drift-alerts", json=body, headers=ci)
    assert response.status_code == 201, response.text
    return response


async def _recorded(resources: Resources, name: str, kind: type[ev.Event]) -> list[Any]:
    return [
        r
        for r in await resources.store.read_stream(model_stream(name))
        if isinstance(r.event, kind)
    ]


async def _given_a_model_with_a_policy(
    client: httpx.AsyncClient, ci: dict[str, str], name: str
) -> None:
    assert (await create_model(client, ci, name)).status_code == 201
    meta = {"format": "lightgbm", "params": {"num_leaves": 7, "learning_rate": 0.1}}
    assert (await register_version(client, ci, name, metadata=meta)).status_code == 201
    files = {"file": ("d.csv", CSV, "text/csv"), "name": (None, "training")}
    assert (await client.post("/v1/datasets", files=files, headers=ci)).status_code == 201
    policy = {"dataset": "training", "target": "label", "cooldown_hours": 24}
    put = await client.put(f"/v1/models/{name}/retraining-policy", json=policy, headers=ci)
    assert put.status_code == 200, put.text


async def test_a_manual_critical_alert_requests_a_train_job_and_the_next_one_is_skipped(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    await _given_a_model_with_a_policy(client, ci, "fraud")
    await _alert(client, ci, "fraud", "warning")
    first = await _alert(client, ci, "fraud", "critical")

    assert await resources.retraining.react() >= 1

    [triggered] = await _recorded(resources, "fraud", ev.RetrainingTriggered)
    [alert] = [
        r
        for r in await _recorded(resources, "fraud", ev.DriftDetected)
        if r.position == first.json()["position"]
    ]
    assert triggered.meta.causation_id == str(alert.event_id)
    request = next(
        r.event
        for r in await _recorded(resources, "fraud", ev.JobRequested)
        if r.event.kind == "train"
    )
    # an uploaded LightGBM version: its trainer from the format, its params, its features
    assert request.params["trainer"] == "lightgbm" and request.params["seed"] == 0
    assert request.params["params"] == {
        "num_leaves": 7,
        "learning_rate": 0.1,
        "features": ["amount", "age", "hour", "merchant"],
    }
    assert (request.params["target"], request.params["retraining"]["parent_version"]) == (
        "label",
        1,
    )

    # a second critical alert within the cooldown: recorded as skipped, with the reason
    await _alert(client, ci, "fraud", "critical")
    await resources.retraining.react()
    [skipped] = await _recorded(resources, "fraud", ev.RetrainingSkipped)
    assert "cooldown" in skipped.event.reason
    view = (await client.get("/v1/models/fraud/retraining-policy", headers=ci)).json()
    assert [d["outcome"] for d in view["decisions"]] == ["skipped", "triggered"]
    assert view["decisions"][1]["job_id"] == request.job_id


async def test_alerts_of_models_without_a_policy_or_raised_before_it_decide_nothing(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "plain")).status_code == 201
    assert (await register_version(client, ci, "plain")).status_code == 201
    await _alert(client, ci, "plain", "critical")
    assert (await create_model(client, ci, "late")).status_code == 201
    assert (await register_version(client, ci, "late")).status_code == 201
    await _alert(client, ci, "late", "critical")  # before its policy
    files = {"file": ("d.csv", CSV, "text/csv"), "name": (None, "training")}
    assert (await client.post("/v1/datasets", files=files, headers=ci)).status_code == 201
    policy = {"dataset": "training", "target": "label"}
    assert (
        await client.put("/v1/models/late/retraining-policy", json=policy, headers=ci)
    ).status_code == 200
    head, _ = await resources.store.head()

    await resources.retraining.react()

    assert (await resources.store.head())[0] == head
    checkpoint = "SELECT position FROM projection_checkpoints WHERE name = 'retraining'"
    assert await resources.pool.fetchval(checkpoint) == head
    # warnings only: nothing to decide, and the checkpoint passes them once far enough behind
    monkeypatch.setattr(retraining, "_SKIP_AHEAD", 0)
    await _alert(client, ci, "late", "warning")
    head, _ = await resources.store.head()
    assert await resources.retraining.react() == 0
    assert await resources.pool.fetchval(checkpoint) == head


async def test_a_critical_performance_alert_of_a_check_retrains_once(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    await _given_a_model_with_a_policy(client, ci, "fraud")
    # what a performance job appends: two critical alerts of one check
    alerts = [
        ev.PerformanceAlert(
            name="fraud",
            version=1,
            environment="production",
            metric=metric,
            value=0.6,
            baseline=0.9,
            threshold=0.08,
            severity="critical",
            rows=400,
            reason=f"{metric} fell by 0.3",
            job_id="perf-check-1",
        )
        for metric in ("auc", "precision")
    ]
    await resources.store.append(
        model_stream("fraud"),
        alerts,
        meta=ev.EventMeta(actor="worker:performance", role="admin"),
        expected_version=None,
    )

    await resources.retraining.react()

    [triggered] = await _recorded(resources, "fraud", ev.RetrainingTriggered)
    assert (triggered.event.trigger, triggered.event.alert_job_id) == (
        "performance",
        "perf-check-1",
    )
    assert not await _recorded(resources, "fraud", ev.RetrainingSkipped)
