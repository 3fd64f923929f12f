"""Jobs that share a model append to one stream: a concurrency conflict on it is an ordinary
retry of the append, never a job left `requested` or failed. Real workers, real Redis."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import httpx
import msgspec
import pytest

from app.resources import Resources
from app.settings import Settings
from app.store.events import EventStore
from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.workers.jobs_helpers import job_status, run_worker
from workers.pool import ProcessPool
from workers.runner import Context, JobRunner

pytestmark = pytest.mark.processes

_T = TypeVar("_T")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, dispatch_jobs=True, job_timeout_seconds=120.0, worker_max_jobs=8
    )


async def test_compiles_requested_in_a_row_each_end_exactly_once(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "busy")).status_code == 201
    created = await register_version(client, ci, "busy", seed=7)
    job_ids = [created.json()["compile_job_id"]]
    # the report was four in a row; seven make the race certain rather than likely
    for _ in range(7):
        requested = await client.post(
            "/v1/jobs", json={"kind": "compile", "model": "busy", "version": 1}, headers=ci
        )
        assert requested.status_code == 202, requested.text
        job_ids.append(requested.json()["job_id"])
    await resources.dispatcher.relay()

    # the eight run at once in one worker: their appends race on the model's stream
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


class StreamMover:
    """Appends to a model's stream from another thread (its own loop and pool), so that a
    decider, which is synchronous, can move the stream between the read and the append."""

    def __init__(self, database_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._store = EventStore(self._call(self._pool(database_url)))

    @staticmethod
    async def _pool(database_url: str) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        assert pool is not None
        return pool

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def move(self, name: str, note: str) -> None:
        edit = ev.ModelUpdated(name=name, description=note)
        meta = ev.EventMeta(actor="someone-else", role="ci")
        self._call(self._store.append(model_stream(name), [edit], meta=meta, expected_version=None))

    def close(self) -> None:
        self._call(self._store.pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def test_a_result_that_meets_conflicts_again_and_again_is_decided_again_until_it_lands(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "moving")).status_code == 201
    created = await register_version(client, ci, "moving", seed=9)
    job_id = created.json()["compile_job_id"]
    position = (await resources.jobs.view(job_id)).requested_position
    mover = await asyncio.to_thread(StreamMover, str(settings.database_url))
    computed = asyncio.Event()
    reads = 0
    read_tails = resources.store.read_tails

    async def read_then_move(after: dict[str, int]) -> Any:
        # another process appends to the stream between each of seven reads and the append
        # that follows it: each of those appends conflicts and is decided again
        nonlocal reads
        tails = await read_tails(after)
        if computed.is_set() and reads < 7:
            reads += 1
            await asyncio.to_thread(mover.move, "moving", f"edit {reads}")
        return tails

    async def busy_kind(ctx: Context) -> cmd.Compiled:
        computed.set()
        library = ev.VersionCompiled(
            name="moving",
            version=1,
            library_sha256="b" * 64,
            max_abs_diff=0.0,
            rows_checked=1,
            job_id=ctx.job.job_id,
        )
        return cmd.Compiled(library=library)

    runner = JobRunner(resources, ProcessPool(1), {"compile": busy_kind})
    resources.store.read_tails = read_then_move  # type: ignore[method-assign]
    try:
        assert await runner.run(job_id, position) == "succeeded"
    finally:
        resources.store.read_tails = read_tails  # type: ignore[method-assign]
        await asyncio.to_thread(mover.close)
    assert reads == 7  # seven conflicts, each decided again on the fresh stream
    recorded = await resources.store.read_stream(model_stream("moving"))
    succeeded = [r.event for r in recorded if isinstance(r.event, ev.JobSucceeded)]
    assert len(succeeded) == 1
    assert sum(isinstance(r.event, ev.ModelUpdated) for r in recorded) == 7
    status = await job_status(client, ci, resources, job_id)
    assert (status["status"], status["attempts"]) == ("succeeded", 1)
