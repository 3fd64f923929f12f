"""Jobs that share a model append to one stream: a concurrency conflict on it is an ordinary
retry of the append, never a job left `requested` or failed. Real workers, real Redis."""

from __future__ import annotations

import collections

import httpx
import msgspec
import pytest

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.workers.jobs_helpers import job_status, run_worker

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, dispatch_jobs=True, job_timeout_seconds=120.0, worker_max_jobs=5
    )


async def test_four_compiles_in_a_row_each_end_exactly_once(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "busy")).status_code == 201
    created = await register_version(client, ci, "busy", seed=7)
    job_ids = [created.json()["compile_job_id"]]
    for _ in range(4):
        requested = await client.post(
            "/v1/jobs", json={"kind": "compile", "model": "busy", "version": 1}, headers=ci
        )
        assert requested.status_code == 202, requested.text
        job_ids.append(requested.json()["job_id"])
    await resources.dispatcher.relay()

    # the five run at once in one worker: their appends race on the model's stream
    await run_worker(settings)

    outcomes: collections.Counter[str] = collections.Counter()
    for recorded in await resources.store.read_stream(model_stream("busy")):
        if isinstance(recorded.event, ev.JobSucceeded | ev.JobFailed) and (
            isinstance(recorded.event, ev.JobSucceeded) or recorded.event.final
        ):
            outcomes[recorded.event.job_id] += 1
    assert outcomes == dict.fromkeys(job_ids, 1)
    for job_id in job_ids:
        status = await job_status(client, ci, resources, job_id)
        assert status["status"] == "succeeded", status
