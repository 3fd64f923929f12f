"""A sweeper decision is recorded once: two sweepers at once, or a sweeper's failure and a
late worker. Sweeps are driven by the test (the app's own sweeper waits an hour)."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from app.resources import Resources, open_resources
from app.services.sweeper import ACTOR
from app.settings import Settings
from domain import commands as cmd
from domain import events as ev
from domain import jobs
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.workers.jobs_helpers import job_status, run_worker, stream_types, wait_for
from tests.workers.sweep_helpers import compile_job, forget, outcomes, requeued_by_sweeper

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # one attempt, overdue 1 + 5 (arq's margin) + 10 (arq's claim) + 0.5 s after it started
    return msgspec.structs.replace(
        settings,
        dispatch_jobs=True,
        job_max_tries=1,
        job_timeout_seconds=1.0,
        job_run_grace_seconds=0.5,
        job_sweep_interval_seconds=3600.0,
    )


async def test_the_last_attempt_overdue_is_failed_by_the_sweeper_and_nothing_lands_after(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    job_id = await compile_job(client, ci, "vanished")
    requested = await resources.jobs.view(job_id)
    request = (await resources.jobs.requested(job_id, requested.requested_position)).request
    # a worker that recorded its start and was never heard of again
    await resources.governance.handle(
        cmd.StartAttempt(job=request, attempt=1, worker="ghost:1"),
        ev.EventMeta(actor="ci", role="ci"),
    )
    assert await resources.sweeper.sweep() == 0  # on time yet

    async def failed() -> bool:
        await resources.sweeper.sweep()
        return bool(await outcomes(resources, "vanished"))

    await wait_for(failed, seconds=60, every=0.5)
    status = await job_status(client, ci, resources, job_id)
    assert (status["status"], status["attempts"]) == ("failed", 1), status
    assert status["error"].startswith("gave up after 1 attempts: attempt 1 had no outcome")
    [failure] = [
        r
        for r in await resources.store.read_stream(model_stream("vanished"))
        if isinstance(r.event, ev.JobFailed)
    ]
    assert (
        failure.meta.actor == ACTOR and failure.event_id == jobs.result_ids(job_id, "result", 1)[0]
    )

    # the job is still queued in arq: delivered now, it finds its outcome recorded
    await resources.dispatcher.relay()
    assert await run_worker(settings) == (1, 0)
    assert await outcomes(resources, "vanished") == 1
    assert "version.compiled" not in await stream_types(resources, "vanished")


async def test_two_sweepers_at_once_record_one_decision(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    async with open_resources(settings) as first, open_resources(settings) as second:
        ci = await auth("ci")
        job_id = await compile_job(client, ci, "contested")
        await resources.dispatcher.relay()
        await forget(resources, job_id)

        # whole passes: one takes the turn, the other skips it or finds nothing left to do
        decided = await asyncio.gather(first.sweeper.sweep(), second.sweeper.sweep())
        assert sorted(decided) == [0, 1]
        assert len(await requeued_by_sweeper(resources, "contested")) == 1

        # one job judged by both at once, past the turn: the decision's id is fixed by the
        # state it was taken on, so the second append is a replay (or finds it decided)
        await resources.dispatcher.relay()
        await forget(resources, job_id)
        view = await resources.jobs.view(job_id)
        relayed_upto = await resources.store.pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = 'dispatcher'"
        )
        now = await resources.store.pool.fetchval("SELECT clock_timestamp()")
        lost = await first.sweeper._queue_views([job_id])
        assert lost is not None and not lost[job_id].holds_job
        settled = await asyncio.gather(
            *(
                sweeper.settle(
                    "contested",
                    job_id,
                    view.requested_position,
                    queue=lost[job_id],
                    relayed_upto=relayed_upto,
                    now=now,
                )
                for sweeper in (first.sweeper, second.sweeper)
            )
        )
        assert sum(settled) >= 1
        requeues = await requeued_by_sweeper(resources, "contested")
        assert [r.requeues for r in requeues] == [1, 2]
