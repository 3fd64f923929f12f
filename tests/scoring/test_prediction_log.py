"""The prediction log (batched off the request path, sampled, bounded) and POST /v1/feedback."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import msgspec
from prometheus_client import REGISTRY

from app.resources import Resources
from app.scoring.predlog import LogSettings
from tests.conftest import TokenFactory
from tests.scoring.helpers import built, deployed, rows_with_missing, score

_DROPPED = "model_ledger_prediction_log_dropped_rows_total"


async def _hold_the_writer(resources: Resources, **limits: int) -> None:
    """Keep queued rows in memory until a flush: the writer waits an hour between batches."""
    log = resources.scoring.predictions
    log.settings = LogSettings(sample_rate=1.0, flush_seconds=3600, **limits)
    await log.flush()  # wakes the writer: its next wait is the hour
    deadline = time.monotonic() + 30
    while log.waiting_seconds != 3600:
        assert time.monotonic() < deadline, "the writer never began its long wait"
        await asyncio.sleep(0.01)


async def test_every_scored_row_is_logged_with_its_id_score_and_sampled_input(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    rows = rows_with_missing(120, seed=1)
    answered = (await score(client, scorer, "fraud", {"rows": rows})).json()
    await resources.scoring.predictions.flush()
    logged = {
        str(r["prediction_id"]): r for r in await resources.pool.fetch("SELECT * FROM predictions")
    }
    assert set(logged) == set(answered["prediction_ids"])
    for prediction, value, row in zip(
        answered["prediction_ids"], answered["scores"], rows, strict=True
    ):
        found = logged[prediction]
        assert (found["name"], found["environment"], found["version"]) == ("fraud", "staging", 1)
        assert (found["arm"], found["library_sha256"]) == (
            "champion",
            built("seed0").library_sha256,
        )
        assert msgspec.json.decode(found["score"]) == value
        # the sample rate is 1 in these tests: every input row is kept, null where missing
        assert msgspec.json.decode(found["features"]) == row

    # a rate of 0 keeps none, a rate of a half about half
    log = resources.scoring.predictions
    log.settings, log.rng = LogSettings(sample_rate=0.5), random.Random(3)
    await score(client, scorer, "fraud", {"rows": rows_with_missing(400, seed=2)})
    await log.flush()  # the writer samples: the rate is the one when a row is written
    log.settings = LogSettings(sample_rate=0.0)
    await score(client, scorer, "fraud", {"rows": rows_with_missing(100, seed=3)})
    await log.flush()
    sampled = await resources.pool.fetchval(
        "SELECT count(*) FILTER (WHERE features IS NOT NULL) FROM predictions"
    )
    assert 120 + 160 < sampled < 120 + 240, sampled
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 620


async def test_under_overload_log_rows_are_dropped_and_counted_never_waited_on(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    await _hold_the_writer(resources, max_pending_rows=5)
    dropped_before = REGISTRY.get_sample_value(_DROPPED, {"reason": "overload"}) or 0.0

    kept = await score(client, scorer, "fraud", {"rows": rows_with_missing(4)})
    over = await score(client, scorer, "fraud", {"rows": rows_with_missing(3)})
    assert kept.status_code == over.status_code == 200
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 0
    await resources.scoring.predictions.flush()
    logged = {
        str(r[0]) for r in await resources.pool.fetch("SELECT prediction_id FROM predictions")
    }
    assert logged == set(kept.json()["prediction_ids"])
    dropped = REGISTRY.get_sample_value(_DROPPED, {"reason": "overload"})
    assert dropped == dropped_before + 3
    metrics = await client.get("/metrics")
    assert f'{_DROPPED}{{reason="overload"}}' in metrics.text


async def test_feedback_is_recorded_once_per_known_prediction_with_a_reward_in_0_1(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    await _hold_the_writer(resources)
    answered = (await score(client, scorer, "fraud", {"rows": rows_with_missing(2)})).json()
    first, second = answered["prediction_ids"]
    # still queued, not yet written: feedback must find it anyway
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 0
    recorded = await client.post(
        "/v1/feedback", json={"prediction_id": first, "reward": 1}, headers=scorer
    )
    assert recorded.status_code == 202, recorded.text
    body = recorded.json()
    assert (body["name"], body["environment"], body["version"], body["reward"]) == (
        "fraud",
        "staging",
        1,
        1.0,
    )
    row = await resources.pool.fetchrow(
        "SELECT name, environment, version, reward FROM feedback WHERE prediction_id = $1",
        uuid.UUID(first),
    )
    assert tuple(row) == ("fraud", "staging", 1, 1.0)

    again = await client.post(
        "/v1/feedback", json={"prediction_id": first, "reward": 0}, headers=scorer
    )
    assert again.status_code == 409, again.text
    for reward in (1.5, -0.1):
        off = await client.post(
            "/v1/feedback", json={"prediction_id": second, "reward": reward}, headers=scorer
        )
        assert off.status_code == 422, off.text
    unknown = await client.post(
        "/v1/feedback", json={"prediction_id": str(uuid.uuid4()), "reward": 0.5}, headers=scorer
    )
    assert unknown.status_code == 404, unknown.text
    malformed = await client.post(
        "/v1/feedback", json={"prediction_id": "nope", "reward": 0.5}, headers=scorer
    )
    assert malformed.status_code == 400, malformed.text
    auditor = await client.post(
        "/v1/feedback", json={"prediction_id": second, "reward": 0.5}, headers=await auth("auditor")
    )
    assert auditor.status_code == 403
    assert await resources.pool.fetchval("SELECT count(*) FROM feedback") == 1


async def test_a_label_observed_days_later_is_recorded_once_beside_or_after_a_reward(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    answered = (await score(client, scorer, "fraud", {"rows": rows_with_missing(3)})).json()
    rewarded, labelled, both = answered["prediction_ids"]

    def send(body: dict[str, object]) -> Any:
        return client.post("/v1/feedback", json=body, headers=scorer)

    assert (await send({"prediction_id": rewarded, "reward": 1})).status_code == 202
    observed = "2026-11-30T08:00:00+00:00"
    late = await send({"prediction_id": rewarded, "label": 1, "observed_at": observed})
    assert late.status_code == 202, late.text
    assert (late.json()["label"], late.json()["reward"]) == (1.0, None)
    assert late.json()["observed_at"] == "2026-11-30T08:00:00Z"
    assert (await send({"prediction_id": rewarded, "label": 0})).status_code == 409
    assert (await send({"prediction_id": labelled, "label": 0})).status_code == 202
    row = await resources.pool.fetchrow(
        "SELECT name, environment, version, label, observed_at, recorded_at FROM outcomes "
        "WHERE prediction_id = $1",
        uuid.UUID(labelled),
    )
    assert tuple(row)[:4] == ("fraud", "staging", 1, 0.0)
    assert row["observed_at"] == row["recorded_at"]  # no observed_at: observed now
    # all or nothing: a reward with a label the prediction already has is not recorded
    refused = await send({"prediction_id": labelled, "reward": 0.5, "label": 1})
    assert refused.status_code == 409, refused.text
    assert "already has a label" in refused.json()["detail"]
    assert (
        await resources.pool.fetchval(
            "SELECT count(*) FROM feedback WHERE prediction_id = $1", uuid.UUID(labelled)
        )
        == 0
    )
    assert (await send({"prediction_id": both, "reward": 0, "label": 0})).status_code == 202
    for bad in (
        {"prediction_id": both},
        {"prediction_id": both, "label": 1, "observed_at": "2999-01-01T00:00:00+00:00"},
        {"prediction_id": both, "label": 1, "observed_at": "2026-11-30T08:00:00"},
        {"prediction_id": both, "label": "yes"},
    ):
        answer = await send(bad)
        assert answer.status_code in (400, 422), (bad, answer.text)
    assert await resources.pool.fetchval("SELECT count(*) FROM outcomes") == 3


async def test_retention_deletes_predictions_older_than_the_setting(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    await score(client, scorer, "fraud", {"rows": rows_with_missing(30)})
    await resources.scoring.predictions.flush()
    days = resources.settings.prediction_retention_days
    await resources.pool.execute(
        "UPDATE predictions SET created_at = now() - $1::interval "
        "WHERE prediction_id IN (SELECT prediction_id FROM predictions LIMIT 12)",
        timedelta(days=days, hours=1),
    )
    assert await resources.scoring.purge() == 12
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 18
    assert await resources.scoring.purge() == 0
