"""Jobs survive what production does to them: a worker killed mid-job, Redis down when a job
is requested. Real processes, real Redis servers, real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
from arq.connections import ArqRedis
from litestar import Litestar
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import TokenFactory, running
from tests.faults.harness import Redis, scratch
from tests.http.governance_helpers import create_model, register_version
from tests.workers.jobs_helpers import (
    job_status,
    run_worker,
    stream_types,
    wait_for,
    worker_process,
)

pytestmark = pytest.mark.processes

# the killed worker's own limit: arq keeps the job marked in progress for about this + 15 s
KILLED_WORKER_TIMEOUT = 4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=120.0)


async def test_a_worker_killed_mid_job_leaves_it_to_another_that_records_it_once(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "killed")).status_code == 201
    created = await register_version(client, ci, "killed", seed=5)
    job_id = created.json()["compile_job_id"]
    await resources.dispatcher.relay()

    worker = worker_process(settings, MODEL_LEDGER_JOB_TIMEOUT_SECONDS=str(KILLED_WORKER_TIMEOUT))
    try:

        async def started() -> bool:
            return "job.started" in await stream_types(resources, "killed")

        await wait_for(started, seconds=90)
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=30)
    assert "job.succeeded" not in await stream_types(resources, "killed"), "killed too late"

    # arq hands the job to the next worker once the dead one's claim on it expires (the
    # dead worker's startup cron also waits there: this worker runs no crons, so it fails)
    complete, _ = await run_worker(settings)
    assert complete == 1

    types = await stream_types(resources, "killed")
    assert types.count("job.started") == 2
    assert types.count("version.compiled") == 1
    assert types.count("job.succeeded") == 1
    status = await job_status(client, ci, resources, job_id)
    assert (status["status"], status["attempts"]) == ("succeeded", 2)


@pytest.fixture
def own_redis() -> Iterator[Redis]:
    """A Redis of this test's own on a unix socket (not yet started)."""
    with scratch() as folder:
        server = Redis(folder)
        try:
            yield server
        finally:
            server.kill()  # if the test started it


@pytest.fixture
async def offline(settings: Settings, own_redis: Redis) -> AsyncIterator[tuple[Settings, Litestar]]:
    """An app whose Redis is down (nothing listens on its port yet)."""
    moved = msgspec.structs.replace(
        settings,
        redis_url=own_redis.url,
        queue_name=f"model-ledger-test:{uuid.uuid4().hex[:12]}",
    )
    async with running(create_app(moved)) as app:
        yield moved, app


async def test_a_job_requested_while_redis_is_down_runs_once_it_is_back(
    offline: tuple[Settings, Litestar], own_redis: Redis
) -> None:
    settings, app = offline
    resources: Resources = app.state.resources
    issued = await tokens.issue(
        resources.store,
        resources.projector,
        resources.minter,
        IssueToken(subject="pipeline", role="ci"),
        meta=EventMeta(actor="test-setup", role="admin"),
    )
    ci = {"Authorization": f"Bearer {issued.token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
        assert (await create_model(client, ci, "offline")).status_code == 201
        created = await register_version(client, ci, "offline", seed=6)
        assert created.status_code == 201, created.text
        job_id = created.json()["compile_job_id"]
        with pytest.raises((RedisError, OSError)):
            await resources.dispatcher.relay()

        await asyncio.to_thread(own_redis.start)
        queue = ArqRedis(connection_pool=ConnectionPool.from_url(str(settings.redis_url)))
        try:

            async def relayed() -> bool:
                try:
                    return bool(await queue.zcard(settings.queue_name))
                except (RedisError, OSError):
                    return False

            # the app's own dispatcher notices, with nobody calling relay()
            await wait_for(relayed, seconds=60)
        finally:
            await queue.aclose(close_connection_pool=True)

        assert await run_worker(settings) == (1, 0)
        status = await job_status(client, ci, resources, job_id)
        assert status["status"] == "succeeded", status
