"""The sweeper: a job whose queue entry vanished, whose worker died, or that arq gave up on is
requeued (and then runs) or failed, visibly and once. Real workers, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import msgspec
import pytest
from arq.constants import result_key_prefix

from app.resources import Resources
from app.services.sweeper import ACTOR
from app.settings import Settings
from tests.conftest import TokenFactory
from tests.workers.jobs_helpers import (
    job_status,
    run_worker,
    stream_types,
    wait_for,
    worker_process,
)
from tests.workers.sweep_helpers import (
    compile_job,
    forget,
    outcomes,
    patient,
    queued,
    requeued_by_sweeper,
)

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # deadlines a test can wait out: an attempt is overdue 2 + 5 (arq's margin) + 10 (arq's
    # claim) + 0.5 s after it started
    return msgspec.structs.replace(
        settings,
        dispatch_jobs=True,
        job_timeout_seconds=2.0,
        job_run_grace_seconds=0.5,
        job_sweep_interval_seconds=0.2,
    )


async def test_a_job_whose_queue_entry_vanished_is_requeued_then_runs_once(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    job_id = await compile_job(client, ci, "forgotten")
    await resources.dispatcher.relay()
    await forget(resources, job_id)

    async def requeued() -> bool:
        return bool(await requeued_by_sweeper(resources, "forgotten"))

    await wait_for(requeued, seconds=30)
    status = await job_status(client, ci, resources, job_id)
    assert status["status"] == "requested"
    assert status["error"].startswith("requeued: its queue entry was lost")
    assert status["details"] == {"requeued_by": ACTOR, "requeues": 1}

    await wait_for(lambda: queued(resources, job_id), seconds=30)  # relayed again
    assert await run_worker(patient(settings)) == (1, 0)
    status = await job_status(client, ci, resources, job_id)
    assert (status["status"], status["attempts"]) == ("succeeded", 1), status
    assert await outcomes(resources, "forgotten") == 1


async def test_a_run_arq_gave_up_on_is_requeued_past_its_kept_result(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    job_id = await compile_job(client, ci, "cut-short")
    await resources.dispatcher.relay()
    # arq's own limit fires long before the runner's: the run ends with no outcome in the
    # log, and arq keeps a failed result under the job's id (which refuses a plain enqueue)
    assert await run_worker(settings, job_timeout=0.3) == (0, 1)
    assert await resources.redis.exists(result_key_prefix + job_id)
    assert await outcomes(resources, "cut-short") == 0

    async def relayed_again() -> bool:
        return bool(await requeued_by_sweeper(resources, "cut-short")) and await queued(
            resources, job_id
        )

    await wait_for(relayed_again, seconds=60)
    assert await run_worker(patient(settings)) == (1, 0)
    status = await job_status(client, ci, resources, job_id)
    assert status["status"] == "succeeded", status
    assert await outcomes(resources, "cut-short") == 1


async def test_a_job_left_running_by_a_killed_worker_and_forgotten_by_redis_runs_again(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    job_id = await compile_job(client, ci, "orphan")
    await resources.dispatcher.relay()
    worker = worker_process(
        settings, MODEL_LEDGER_JOB_TIMEOUT_SECONDS="120", MODEL_LEDGER_DISPATCH_JOBS="false"
    )
    try:

        async def started() -> bool:
            return "job.started" in await stream_types(resources, "orphan")

        await wait_for(started, seconds=90)
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        await asyncio.to_thread(worker.wait, 30)
    assert "job.succeeded" not in await stream_types(resources, "orphan"), "killed too late"
    await forget(resources, job_id)  # arq's claim and entry are gone too: only the log knows

    async def relayed_again() -> bool:
        return bool(await requeued_by_sweeper(resources, "orphan")) and await queued(
            resources, job_id
        )

    await wait_for(relayed_again, seconds=90)
    [requeue] = await requeued_by_sweeper(resources, "orphan")
    assert requeue.attempts == 1 and "attempt 1 had no outcome" in requeue.reason
    # (the killed worker's startup cron waits in the queue too: this worker has no crons)
    complete, _ = await run_worker(patient(settings))
    assert complete == 1
    status = await job_status(client, ci, resources, job_id)
    assert (status["status"], status["attempts"]) == ("succeeded", 2), status
    assert await outcomes(resources, "orphan") == 1
