"""Each job kind end to end on the demo data: train → compile → compliance → canary → drift →
the policy's rollback. Requested over HTTP, run by real arq burst workers on real Redis."""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from app.resources import Resources, open_resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, record_compiled, register_version
from tests.workers.jobs_helpers import job_status, run_worker, stream_types
from workers.jobs.schedule import schedule_drift_checks
from workers.ml import demo_data, tabular

pytestmark = pytest.mark.processes

ROWS = 4_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=300.0)


async def _upload(client: httpx.AsyncClient, headers: dict[str, str], shift: float = 0.0) -> str:
    table = demo_data.fraud_transactions(ROWS, seed=11, shift=shift)
    data = demo_data.parquet_bytes(table)
    files = {"file": ("window.parquet", io.BytesIO(data), "application/octet-stream")}
    uploaded = await client.post("/v1/datasets", files=files, headers=headers)
    assert uploaded.status_code == 201, uploaded.text
    digest: str = uploaded.json()["sha256"]
    return digest


async def _job(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    requested = await client.post("/v1/jobs", json={"model": "fraud", **body}, headers=headers)
    assert requested.status_code == 202, requested.text
    job_id: str = requested.json()["job_id"]
    return job_id


async def _run(settings: Settings, resources: Resources) -> None:
    """Run every job requested so far, and those they request (train → compile)."""
    while await resources.dispatcher.relay() or await resources.redis.zcard(settings.queue_name):
        _, failed = await run_worker(settings)
        assert failed == 0


async def _events(resources: Resources, kind: type[ev.Event]) -> list[Any]:
    recorded = await resources.store.read_stream(model_stream("fraud"))
    return [r for r in recorded if isinstance(r.event, kind)]


async def test_the_job_kinds_tell_the_whole_story(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    model = {"name": "fraud", "risk_tier": "low", "sensitive_features": ["age_band"]}
    assert (await client.post("/v1/models", json=model, headers=ci)).status_code == 201
    dataset = await _upload(client, ci)

    # train: two versions, each registered with lineage and a compile request
    train = {"dataset_sha256": dataset, "target": "is_fraud"}
    trained = [
        await _job(
            client,
            ci,
            kind="train",
            params={**train, "seed": seed, "params": {"num_trees": 25, "exclude": ["age_band"]}},
        )
        for seed in (1, 2)
    ]
    await _run(settings, resources)  # the trained versions' compile jobs run too
    for job_id in trained:
        status = await job_status(client, ci, resources, job_id)
        assert status["status"] == "succeeded", status
        assert status["result"]["metrics"]["auc"] > 0.75
    registered = [r.event for r in await _events(resources, ev.VersionRegistered)]
    # the two trainings may run at once: version numbers follow whichever finished first
    assert [v.version for v in registered] == [1, 2]
    assert {v.lineage.training_job for v in registered} == set(trained)
    assert registered[0].lineage.dataset_sha256 == dataset
    assert registered[0].lineage.profile_sha256 is not None
    assert "age_band" not in registered[0].feature_names
    assert "merchant_category" in registered[0].params["categories"]

    # compile: certified on the training holdout, NaNs and categories included
    # the two compile jobs may also run at once: each version compiled once, in either order
    compiled = [r.event for r in await _events(resources, ev.VersionCompiled)]
    assert sorted(c.version for c in compiled) == [1, 2]
    assert all(c.max_abs_diff == 0.0 and c.rows_checked >= ROWS // 5 for c in compiled)

    # compliance: fairness by age band, the report stored, its digest in the event
    checked_job = await _job(
        client,
        ci,
        kind="compliance",
        version=1,
        params={"dataset_sha256": dataset, "target": "is_fraud"},
    )
    await _run(settings, resources)
    checked = (await _events(resources, ev.ComplianceChecked))[-1].event
    assert checked.job_id == checked_job and checked.version == 1
    assert "age_band.demographic_parity_difference" in checked.metrics
    report = msgspec.json.decode(resources.artifacts.path_of(checked.report_sha256).read_bytes())
    assert set(report["features"]["age_band"]["groups"]) == set(demo_data.AGE_BANDS)
    assert report["passed"] == checked.passed

    # a canary of version 2 beside version 1 in staging
    for change in (
        {"version": 1, "environment": "staging"},
        {"version": 2, "environment": "staging", "strategy": "canary", "traffic_percent": 20},
    ):
        promoted = await client.post("/v1/models/fraud/promotions", json=change, headers=ci)
        assert promoted.status_code == 201, promoted.text

    # drift on an unshifted window: nothing to report
    calm = await _job(
        client,
        ci,
        kind="drift",
        version=1,
        params={"environment": "staging", "dataset_sha256": dataset},
    )
    await _run(settings, resources)
    assert (await job_status(client, ci, resources, calm))["result"]["severity"] == "info"

    # drift on a shifted window served by the canary: critical, and the canary is demoted
    shifted = await _upload(client, ci, shift=1.0)
    storm = await _job(
        client, ci, kind="drift", params={"environment": "staging", "dataset_sha256": shifted}
    )
    await _run(settings, resources)
    check = (await _events(resources, ev.DriftChecked))[-1].event
    assert (check.version, check.severity, check.job_id) == (2, "critical", storm)
    alerts = [r for r in await _events(resources, ev.DriftDetected) if r.event.job_id == storm]
    assert alerts and alerts[0].event.severity == "critical"
    demoted = (await _events(resources, ev.DeploymentChanged))[-1]
    assert demoted.event.action == "demotion" and demoted.event.version == 2
    assert demoted.meta.causation_id == str(alerts[0].event_id)
    staging = (await client.get("/v1/models/fraud", headers=ci)).json()["deployments"]["staging"]
    assert (staging["champion"], staging["challenger"]) == (1, None)
    types = await stream_types(resources, "fraud")
    assert types.count("job.succeeded") == 7

    # scheduled: the champion's sampled inputs in the prediction log are due for a check
    await _log_inputs(resources, registered[0], shift=1.0)
    scheduled = msgspec.structs.replace(settings, drift_min_new_rows=100)
    async with open_resources(scheduled) as own:
        assert await schedule_drift_checks(own) == 1
        assert await schedule_drift_checks(own) == 0  # nothing new since that request
    await _run(settings, resources)
    logged = (await _events(resources, ev.DriftChecked))[-1]
    assert (logged.event.version, logged.event.source) == (1, "predictions")
    assert logged.event.rows == 300 and logged.event.severity == "critical"
    assert logged.meta.actor == "system:drift-schedule"


async def _log_inputs(resources: Resources, version: ev.VersionRegistered, shift: float) -> None:
    """What the scorer logs for a sample of requests: the model's input row, by position."""
    table = demo_data.fraud_transactions(300, seed=5, shift=shift)
    categories = version.params["categories"]
    matrix = tabular.features_matrix(table, version.feature_names, categories)
    now = datetime.now(UTC)
    rows = [
        (
            uuid.uuid4(),
            "fraud",
            "staging",
            version.version,
            "lib",
            "champion",
            "0.1",
            json.dumps([None if math.isnan(v) else v for v in row]),
            now,
        )
        for row in matrix.tolist()
    ]
    await resources.pool.copy_records_to_table("predictions", records=rows)


async def _feedback(resources: Resources, version: int, rewards: list[float]) -> None:
    """What the scorer and POST /v1/feedback write: a prediction, then its reward."""
    now = datetime.now(UTC)
    predictions = [
        (uuid.uuid4(), "fraud", "staging", version, "lib", "challenger", "0.5", None, now)
        for _ in rewards
    ]
    await resources.pool.copy_records_to_table("predictions", records=predictions)
    await resources.pool.copy_records_to_table(
        "feedback",
        records=[
            (p[0], "fraud", "staging", version, r, now)
            for p, r in zip(predictions, rewards, strict=True)
        ],
        columns=["prediction_id", "name", "environment", "version", "reward", "recorded_at"],
    )


async def test_the_bandit_job_folds_rewards_into_posteriors_and_concludes(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    for seed in (0, 1):
        created = await register_version(client, ci, "fraud", seed=seed)
        await record_compiled(resources, "fraud", created.json()["version"])
    for change in (
        {"version": 1, "environment": "staging"},
        {"version": 2, "environment": "staging", "strategy": "bandit"},
    ):
        promoted = await client.post("/v1/models/fraud/promotions", json=change, headers=ci)
        assert promoted.status_code == 201, promoted.text

    # a few rewards: posteriors move, nothing is concluded yet
    await _feedback(resources, 1, [1.0, 0.0, 0.0])
    await _feedback(resources, 2, [1.0, 1.0, 0.0])
    first = await _job(client, ci, kind="bandit", params={"environment": "staging"})
    await _run(settings, resources)
    assert (await job_status(client, ci, resources, first))["result"]["concluded"] is False
    update = (await _events(resources, ev.BanditUpdated))[-1].event
    arms = {arm.version: arm for arm in update.arms}
    assert (arms[1].successes, arms[1].failures, arms[2].successes) == (1.0, 2.0, 2.0)
    assert sum(arm.allocation for arm in update.arms) == pytest.approx(1.0)
    assert not await _events(resources, ev.ExperimentConcluded)

    # plenty: version 2 (60% reward) clearly beats version 1 (30%)
    await _feedback(resources, 1, [1.0] * 90 + [0.0] * 210)
    await _feedback(resources, 2, [1.0] * 180 + [0.0] * 120)
    second = await _job(client, ci, kind="bandit", params={"environment": "staging"})
    await _run(settings, resources)
    status = await job_status(client, ci, resources, second)
    assert (status["result"]["concluded"], status["result"]["winner"]) == (True, 2)
    concluded = (await _events(resources, ev.ExperimentConcluded))[-1].event
    assert concluded.winner == 2 and concluded.probability_to_beat > 0.95
    assert concluded.p_value is not None and concluded.p_value < 0.01
    slot = (await client.get("/v1/models/fraud", headers=ci)).json()["deployments"]["staging"]
    assert slot["champion"] == 1  # concluding names the winner; promoting it is a decision


async def test_a_bandit_job_without_an_experiment_is_refused(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    refused = await client.post(
        "/v1/jobs", json={"model": "fraud", "kind": "bandit", "params": {}}, headers=ci
    )
    assert refused.status_code == 409
    assert "no bandit experiment runs in production" in refused.json()["detail"]
