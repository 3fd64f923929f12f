"""Jobs end to end: requested over HTTP, relayed by the dispatcher, run by a real arq worker
on real Redis, recorded as events exactly once."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.workers.jobs_helpers import job_status, run_worker, stream_types

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=120.0)


async def _version(
    client: httpx.AsyncClient, headers: dict[str, str], name: str
) -> dict[str, object]:
    assert (await create_model(client, headers, name)).status_code == 201
    created = await register_version(client, headers, name, seed=3)
    assert created.status_code == 201, created.text
    body: dict[str, object] = created.json()
    return body


async def test_registering_a_version_compiles_it_with_a_parity_certificate(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    created = await _version(client, ci, "fraud")
    job_id = str(created["compile_job_id"])
    assert (await job_status(client, ci, resources, job_id))["status"] == "requested"

    assert await resources.dispatcher.relay() in (0, 1)  # the app's own dispatcher may be first
    assert await run_worker(settings) == (1, 0)

    status = await job_status(client, ci, resources, job_id)
    assert status["status"] == "succeeded", status
    assert status["attempts"] == 1
    assert status["result"]["max_abs_diff"] == 0.0
    types = await stream_types(resources, "fraud")
    assert types[-3:] == ["job.started", "version.compiled", "job.succeeded"]
    compiled = (await resources.store.read_stream(model_stream("fraud")))[-2].event
    assert isinstance(compiled, ev.VersionCompiled)
    assert compiled.job_id == job_id and compiled.rows_checked > 100
    assert compiled.compiler and "-O3" in compiled.flags
    assert resources.artifacts.path_of(compiled.library_sha256).stat().st_size > 0
    version = (await client.get("/v1/models/fraud/versions/1", headers=ci)).json()
    assert version["state"] == "validated"  # low risk: compiled and every gate met


async def test_a_job_run_again_records_nothing_more(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    created = await _version(client, ci, "twice")
    await resources.dispatcher.relay()
    assert await run_worker(settings) == (1, 0)
    before = await stream_types(resources, "twice")

    # the same job delivered again (a duplicate, or arq's result expired and it was re-sent)
    job = await resources.jobs.view(str(created["compile_job_id"]))
    await resources.redis.enqueue_job(
        "run_job", job.job_id, job.requested_position, _queue_name=settings.queue_name
    )
    assert await run_worker(settings) == (1, 0)
    assert await stream_types(resources, "twice") == before


async def test_a_failing_job_ends_failed_with_its_error(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    await _version(client, ci, "broken")
    await resources.dispatcher.relay()
    await run_worker(settings)
    requested = await client.post(
        "/v1/jobs",
        json={
            "kind": "compile",
            "model": "broken",
            "version": 1,
            "params": {"holdout_sha256": "0" * 64},
        },
        headers=ci,
    )
    assert requested.status_code == 202, requested.text
    job_id = requested.json()["job_id"]
    await resources.dispatcher.relay()
    assert await run_worker(settings) == (1, 0)

    status = await job_status(client, ci, resources, job_id)
    assert status["status"] == "failed"
    assert "no stored holdout rows" in status["error"]
    assert (await stream_types(resources, "broken"))[-2:] == ["job.started", "job.failed"]


async def test_a_job_that_times_out_is_retried_with_backoff_then_fails(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    created = await _version(client, ci, "slow")
    await resources.dispatcher.relay()
    # far too little time to compile: every attempt times out and its process is killed
    hurried = msgspec.structs.replace(settings, job_timeout_seconds=0.2, job_max_tries=2)
    assert await run_worker(hurried) == (1, 0)

    status = await job_status(client, ci, resources, str(created["compile_job_id"]))
    assert (status["status"], status["attempts"], status["error"]) == ("failed", 2, "timed out")
    failures = [
        r.event
        for r in await resources.store.read_stream(model_stream("slow"))
        if isinstance(r.event, ev.JobFailed)
    ]
    assert [(f.attempt, f.final) for f in failures] == [(1, False), (2, True)]
    assert "version.compiled" not in await stream_types(resources, "slow")
