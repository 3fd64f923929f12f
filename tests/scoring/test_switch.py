"""Versions switch atomically under load; a library that is not the approved one never serves."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from app.resources import Resources
from app.scoring.predlog import LogSettings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import (
    Built,
    add_version,
    built,
    promote,
    record_library,
    rows_with_missing,
    score,
)

_REFUSED = "model_ledger_scorer_libraries_refused_total"


async def _serving(resources: Resources, version: int, environment: str = "staging") -> None:
    """Wait until the scorer's follower (not the test) has switched to `version`."""
    deadline = time.monotonic() + 15
    while True:
        route = resources.scoring.scorer.routes().get(("fraud", environment))
        if route is not None and not isinstance(route, str) and route.champion.version == version:
            return
        assert time.monotonic() < deadline, f"version {version} never served: {route}"
        await asyncio.sleep(0.01)


Answers = list[tuple[int, tuple[object, object]]]


async def _answered(answers: Answers, *, version: int, count: int = 20) -> None:
    """Wait until the load has had `count` more answers, one at least from `version`."""
    target, deadline = len(answers) + count, time.monotonic() + 30

    def met() -> bool:
        tail = answers[target - count :]
        return len(answers) >= target and any(pair[0] == version for _, pair in tail)

    while not met():
        assert time.monotonic() < deadline, f"no answers from version {version}"
        await asyncio.sleep(0.01)


async def test_promotions_and_rollbacks_under_load_never_fail_or_mix_a_request(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="httpx")  # thousands of requests
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    kinds = {await add_version(client, ci, resources, "fraud", k): k for k in ("seed0", "seed1")}
    kinds[await add_version(client, ci, resources, "fraud", "seed2")] = "seed2"
    real_pairs = {(v, built(k).library_sha256) for v, k in kinds.items()}
    resources.scoring.predictions.settings = LogSettings(sample_rate=0.0)
    await promote(client, ci, "fraud", 1)
    await _serving(resources, 1)
    scorer = await auth("scorer")
    answers: Answers = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        rows, batch = rows_with_missing(3, seed=worker), rows_with_missing(2_000, seed=worker)
        sent = 0
        while not stop.is_set():
            # now and then a batch big enough to be scored in a thread while the switch happens
            sent += 1
            body = {"rows": batch if worker == 0 and sent % 10 == 0 else rows}
            response = await score(client, scorer, "fraud", body)
            body = response.json()
            answers.append(
                (response.status_code, (body.get("version"), body.get("library_sha256")))
            )
            # in process nothing suspends a request: yield as a socket read would
            await asyncio.sleep(0)

    workers = [asyncio.create_task(load(n)) for n in range(3)]
    try:
        await _answered(answers, version=1)
        for step, expected in (
            ("promote", 2),
            ("promote", 3),
            ("rollback", 2),
            ("rollback", 1),
            ("promote", 3),
        ):
            if step == "promote":
                await promote(client, ci, "fraud", expected)
            else:
                rolled = await client.post(
                    "/v1/models/fraud/rollbacks",
                    json={"environment": "staging", "reason": "load test"},
                    headers=ci,
                )
                assert rolled.status_code == 201, rolled.text
                assert rolled.json()["champion"] == expected
            await _serving(resources, expected)
            # the load meets each version at least a few times before the next switch
            await _answered(answers, version=expected)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    statuses = {status for status, _ in answers}
    assert statuses == {200}, statuses
    served = {pair for _, pair in answers}
    assert served <= real_pairs, served - real_pairs
    assert served == real_pairs  # every version served during the run
    assert len(answers) > 100


def _tamper(resources: Resources, digest: str) -> Path:
    path = resources.artifacts.path_of(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


async def test_a_tampered_library_is_refused_and_the_deployment_answers_503_until_restored(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, scorer = await auth("ci"), await auth("scorer")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    await promote(client, ci, "fraud", await add_version(client, ci, resources, "fraud", "seed0"))
    second = await add_version(client, ci, resources, "fraud", "seed1")
    path = _tamper(resources, built("seed1").library_sha256)
    refused_before = REGISTRY.get_sample_value(_REFUSED) or 0.0

    await promote(client, ci, "fraud", second)
    await resources.scoring.scorer.refresh()
    row = {"rows": [[0.1, 0.2, 0.3, 1.0]]}
    refused = await score(client, scorer, "fraud", row)
    # the log names version 2: its library is not the certified one, so nothing serves there
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "is not the approved" in refused.json()["detail"]
    assert (REGISTRY.get_sample_value(_REFUSED) or 0.0) > refused_before

    path.write_bytes(built("seed1").library)
    await resources.scoring.scorer.refresh()  # refused deployments are retried every refresh
    restored = await score(client, scorer, "fraud", row)
    assert restored.status_code == 200, restored.text
    assert restored.json()["version"] == second
    assert hashlib.sha256(path.read_bytes()).hexdigest() == restored.json()["library_sha256"]


async def test_production_serves_only_the_library_an_approver_approved(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, scorer = await auth("ci"), await auth("scorer")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    version = await add_version(client, ci, resources, "fraud", "seed0")
    approved = await client.post(
        f"/v1/models/fraud/versions/{version}/approvals",
        json={"decision": "approve"},
        headers=await auth("approver"),
    )
    assert approved.status_code == 201, approved.text
    await promote(client, ci, "fraud", version, environment="production")
    await promote(client, ci, "fraud", version, environment="staging")
    await resources.scoring.scorer.refresh()
    row = {"rows": [[0.1, 0.2, 0.3, 1.0]]}
    served = await client.post("/v1/score/fraud", json=row, headers=scorer)
    assert served.status_code == 200, served.text
    assert served.json()["library_sha256"] == built("seed0").library_sha256

    # rebuilt after the approval: a different library, certified, but approved by nobody
    rebuilt = Built(**{**built("seed0").__dict__, "library": built("seed1").library})
    digest = await record_library(resources, "fraud", version, rebuilt)
    await resources.scoring.scorer.refresh()
    production = await client.post("/v1/score/fraud", json=row, headers=scorer)
    assert production.status_code == 503, production.text
    assert "never approved for production" in production.json()["detail"]
    # staging is not gated: the certified rebuild serves there
    staging = await score(client, scorer, "fraud", row)
    assert staging.status_code == 200 and staging.json()["library_sha256"] == digest


async def test_scorer_loaded_goes_to_the_instance_stream_not_the_models(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    first = await add_version(client, ci, resources, "fraud", "seed0")
    second = await add_version(client, ci, resources, "fraud", "seed1")
    await promote(client, ci, "fraud", first)
    await resources.scoring.scorer.refresh()
    model_version = len(await resources.store.read_stream(model_stream("fraud")))
    await promote(client, ci, "fraud", second, strategy="canary", traffic_percent=10)
    await resources.scoring.scorer.refresh()

    loaded = [
        r.event
        for r in await resources.store.read_stream("scorer-test-scorer")
        if isinstance(r.event, ev.ScorerLoaded)
    ]
    assert [(e.name, e.environment, e.version, e.arm) for e in loaded] == [
        ("fraud", "staging", first, "champion"),
        ("fraud", "staging", second, "challenger"),
    ]
    assert loaded[1].library_sha256 == built("seed1").library_sha256
    assert {e.instance for e in loaded} == {"test-scorer"}
    model_events = await resources.store.read_stream(model_stream("fraud"))
    # only the promotion was added to the model's stream
    assert len(model_events) == model_version + 1
