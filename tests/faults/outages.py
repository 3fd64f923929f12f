"""Store outages under load: Redis killed and started again empty, PostgreSQL stopped (or
killed) and started again, while 8 clients register models.

The log is PostgreSQL: with Redis away writes and job requests go on, and the jobs run once
Redis is back. With PostgreSQL away the API answers 503 (never 500) and recovers by itself,
in the same process; nothing acknowledged is lost either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx

from tests.faults import jobs
from tests.faults.load import PatientWrites, log_facts
from tests.faults.stack import Stack

# a condition the scenario waits on is a fault of the product past this long
_PATIENCE = 60.0


@dataclass(frozen=True)
class RedisOutageOutcome:
    """What writes and job requests did while Redis was away, and how the jobs ended."""

    acknowledged: int
    acknowledged_while_down: int
    lost: int
    gap_free: bool
    chain_ok: bool
    jobs_requested: int
    jobs_requested_while_down: int
    jobs_accepted: int
    jobs_terminal: int
    jobs_duplicated: int
    jobs_never_finished: int
    # requeued by the sweeper (a queue entry Redis lost)
    jobs_requeued: int
    # from Redis answering again to every job terminal (3 requested after it included)
    seconds_to_terminal: float
    views_agree: bool
    # by the API and the worker
    errors_logged: int
    statuses: Counter[int] = field(default_factory=Counter)


@dataclass(frozen=True)
class DatabaseOutageOutcome:
    """What the clients got while PostgreSQL was away, and how soon the API was back."""

    how: str
    acknowledged: int
    lost: int
    gap_free: bool
    chain_ok: bool
    # answers to writes while it was away: refused (503), errors (500), none at all
    refused: int
    errors: int
    transport_errors: int
    # from the start command: until PostgreSQL accepts connections (crash recovery
    # included), the first write acknowledged, /ready answering 200
    seconds_starting: float
    seconds_to_first_write: float
    seconds_to_ready: float
    ready_during: int
    ready_after: int
    # the API process that started is the one still answering
    same_api_process: bool
    errors_logged: int
    # warnings naming Redis, which never went away: an outage blamed on the wrong store
    redis_blamed: int
    statuses: Counter[int] = field(default_factory=Counter)


def _warns(line: str) -> bool:
    return line.startswith(("WARNING", "ERROR", "CRITICAL"))


async def until(condition: Callable[[], bool], what: str, seconds: float = _PATIENCE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def writing(url: str, headers: dict[str, str], writes: PatientWrites) -> AsyncIterator[None]:
    """8 patient writers run for the duration of the block."""
    stop = asyncio.Event()
    load = asyncio.create_task(writes.run(url, headers, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(load, return_exceptions=True)


class JobRequests:
    """Compile requests sent one after another, paced, until stopped."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.job_ids: list[str] = []
        self.sent = 0
        self.statuses: Counter[int] = Counter()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sent += 1
            job_id = await jobs.request_compile(self.client, self.statuses)
            if job_id is not None:
                self.job_ids.append(job_id)
            await asyncio.sleep(0.1)  # pacing: a CI pipeline, not a flood


@contextlib.asynccontextmanager
async def requesting(client: httpx.AsyncClient) -> AsyncIterator[JobRequests]:
    """Compile requests run for the duration of the block."""
    requests, stop = JobRequests(client), asyncio.Event()
    task = asyncio.create_task(requests.run(stop))
    try:
        yield requests
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def _log_checks(
    stack: Stack, client: httpx.AsyncClient, acknowledged: list[str]
) -> tuple[int, bool, bool]:
    """(acknowledged writes missing, positions gap-free, chain verifies)."""
    facts = await log_facts(stack.database_url)
    report = (await client.get("/v1/audit/verify")).json()
    return len(set(acknowledged) - facts.registered), facts.count == facts.head, bool(report["ok"])


async def redis_restarted_empty_under_load(
    stack: Stack, writes_between: int = 100
) -> RedisOutageOutcome:
    """Redis SIGKILLed and started again with nothing in it, while 8 clients register models
    and compile jobs are requested; one API (which relays and sweeps) and one worker."""
    api = stack.start("serve", "--no-worker", "--port", "0", **jobs.JOB_ENV)
    url = api.listening()
    worker = stack.start("worker", **jobs.JOB_ENV)
    writes = PatientWrites("r")
    async with (
        httpx.AsyncClient(base_url=url, headers=stack.admin_headers(), timeout=30) as client,
        jobs.log_reader(stack.database_url) as log,
    ):
        first = await jobs.registered_model(client)
        assert await log.until_terminal([first], _PATIENCE), "the first compile never ended"
        async with requesting(client) as requests, writing(url, stack.admin_headers(), writes):
            await until(lambda: len(writes.acknowledged) >= writes_between, "writes")
            await until(lambda: len(requests.job_ids) >= 3, "job requests")
            await asyncio.to_thread(stack.redis.kill)
            stack.redis.forget()
            writes_before, jobs_before = len(writes.acknowledged), requests.sent
            await until(
                lambda: len(writes.acknowledged) >= writes_before + writes_between, "writes"
            )
            await until(lambda: requests.sent >= jobs_before + 5, "job requests")
            await asyncio.to_thread(stack.redis.start)
            answered_at = time.monotonic()
            down_writes = len(writes.acknowledged) - writes_before
            down_jobs = requests.sent - jobs_before
            jobs_after = requests.sent
            await until(lambda: requests.sent >= jobs_after + 3, "job requests")
        job_ids = [first, *requests.job_ids]
        finished = await log.until_terminal(job_ids, _PATIENCE)
        took = time.monotonic() - answered_at
        outcomes = await log.outcomes()
        requeued = await log.requeued()
        statuses = writes.statuses + requests.statuses
        found = await jobs.final_views(client, job_ids, statuses, finished=finished)
        lost, gap_free, chain_ok = await _log_checks(stack, client, writes.acknowledged)
    ends = [outcomes.get(job, []) for job in job_ids]
    return RedisOutageOutcome(
        acknowledged=len(writes.acknowledged),
        acknowledged_while_down=down_writes,
        lost=lost,
        gap_free=gap_free,
        chain_ok=chain_ok,
        jobs_requested=requests.sent + 1,
        jobs_requested_while_down=down_jobs,
        jobs_accepted=len(job_ids),
        jobs_terminal=sum(1 for end in ends if end),
        jobs_duplicated=sum(1 for end in ends if len(end) > 1),
        jobs_never_finished=sum(1 for end in ends if not end),
        jobs_requeued=requeued,
        seconds_to_terminal=round(took, 1),
        views_agree=jobs.agree(outcomes, found),
        errors_logged=jobs.errors_logged(api, worker),
        statuses=statuses,
    )


async def _ready(client: httpx.AsyncClient) -> int:
    try:
        return (await client.get("/ready")).status_code
    except httpx.TransportError:
        return 0


async def _until_ready_is(client: httpx.AsyncClient, status: int) -> None:
    deadline = time.monotonic() + _PATIENCE
    while (answer := await _ready(client)) != status:
        assert time.monotonic() < deadline, f"/ready kept answering {answer}, not {status}"
        await asyncio.sleep(0.05)


async def database_restarted_under_load(
    stack: Stack, how: Literal["stop", "kill"], writes_between: int = 100
) -> DatabaseOutageOutcome:
    """PostgreSQL stopped (a fast shutdown) or killed (SIGKILL: a crash, recovered at the next
    start) and started again while 8 clients register models; one API, no restart of it."""
    api = stack.start("serve", "--no-worker", "--port", "0")
    url = api.listening()
    pid = api.pid
    writes = PatientWrites("p")
    async with (
        httpx.AsyncClient(base_url=url, headers=stack.admin_headers(), timeout=30) as client,
        writing(url, stack.admin_headers(), writes),
    ):
        await _until_ready_is(client, 200)
        await until(lambda: len(writes.acknowledged) >= writes_between, "writes")
        refused = writes.statuses[503]
        await asyncio.to_thread(stack.postgres.stop if how == "stop" else stack.postgres.kill)
        # every writer refused a few times over
        await until(lambda: writes.statuses[503] >= refused + 40, "writes refused")
        ready_during = await _ready(client)
        restart_at = time.monotonic()
        await asyncio.to_thread(stack.postgres.start)
        seconds_starting = time.monotonic() - restart_at
        await until(lambda: writes.first_acknowledged_after(restart_at) is not None, "a write")
        first_write = writes.first_acknowledged_after(restart_at)
        await _until_ready_is(client, 200)
        seconds_to_ready = time.monotonic() - restart_at
        recovered = len(writes.acknowledged)
        await until(lambda: len(writes.acknowledged) >= recovered + writes_between, "writes")
        ready_after = await _ready(client)
    async with httpx.AsyncClient(base_url=url, headers=stack.admin_headers(), timeout=30) as client:
        lost, gap_free, chain_ok = await _log_checks(stack, client, writes.acknowledged)
    assert first_write is not None
    return DatabaseOutageOutcome(
        how=how,
        acknowledged=len(writes.acknowledged),
        lost=lost,
        gap_free=gap_free,
        chain_ok=chain_ok,
        refused=writes.statuses[503],
        errors=writes.statuses[500],
        transport_errors=writes.transport_errors,
        seconds_starting=round(seconds_starting, 2),
        seconds_to_first_write=round(first_write - restart_at, 2),
        seconds_to_ready=round(seconds_to_ready, 2),
        ready_during=ready_during,
        ready_after=ready_after,
        same_api_process=api.popen.poll() is None and api.pid == pid,
        errors_logged=jobs.errors_logged(api),
        redis_blamed=sum(1 for line in list(api.output) if _warns(line) and "Redis" in line),
        statuses=writes.statuses,
    )
