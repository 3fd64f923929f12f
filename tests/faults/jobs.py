"""Jobs under faults: compile jobs requested at once while a worker is killed with SIGKILL.

Each job must end exactly once (one `job.succeeded` or final `job.failed` in the log), however
its attempts were interrupted. `LogReader` reads that straight from the database; the Redis
outage scenario (tests/faults/outages.py) uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx

from tests.faults.harness import Process
from tests.faults.stack import Stack
from tests.http.governance_helpers import create_model, register_version

MODEL = "faults-jobs"
# short job deadlines, so an attempt lost with its worker is taken again within seconds: arq
# redelivers it once its claim lapses (timeout + max(5, timeout / 10) + 10 s after it
# started), and the sweeper looks every half second for what arq let go
JOB_ENV = {
    "MODEL_LEDGER_JOB_TIMEOUT_SECONDS": "10",
    "MODEL_LEDGER_JOB_RUN_GRACE_SECONDS": "1",
    "MODEL_LEDGER_JOB_SWEEP_INTERVAL_SECONDS": "0.5",
    "MODEL_LEDGER_CHECKPOINT_INTERVAL_SECONDS": "3600",
}
TERMINAL = frozenset({"succeeded", "failed"})

_OUTCOMES = (
    "SELECT data->>'job_id' AS job_id, type FROM events "
    "WHERE type = 'job.succeeded' OR (type = 'job.failed' AND (data->>'final')::boolean)"
)
_STARTED = (
    "SELECT data->>'job_id' AS job_id, data->>'worker' AS worker FROM events "
    "WHERE type = 'job.started' ORDER BY position"
)
# attempts started by a worker that no event of the same attempt ended
_CUT_SHORT = (
    "SELECT count(*) FROM events s WHERE s.type = 'job.started' AND s.data->>'worker' = $1 "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.type IN ('job.succeeded', 'job.failed') "
    "AND e.data->>'job_id' = s.data->>'job_id' AND e.data->>'attempt' = s.data->>'attempt')"
)
# the worker of the latest attempt that nothing ended yet
_RUNNING = (
    "SELECT s.data->>'worker' AS worker FROM events s WHERE s.type = 'job.started' "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.type IN ('job.succeeded', 'job.failed') "
    "AND e.data->>'job_id' = s.data->>'job_id' AND e.data->>'attempt' = s.data->>'attempt') "
    "ORDER BY s.position DESC LIMIT 1"
)


@dataclass(frozen=True)
class JobsOutcome:
    """How the requested jobs ended, as the log and the API tell it."""

    # job requests made (the registration's compile included) and those accepted (202)
    requested: int
    accepted: int
    # jobs with at least one outcome, and those ending in success
    terminal: int
    succeeded: int
    # jobs with more than one outcome (the contract is exactly one)
    duplicated: int
    never_finished: int
    # attempts the killed worker had started and not finished when it died
    interrupted: int
    # jobs that took more than one attempt
    rerun: int
    # from the fault (the kill) to every job terminal
    seconds_to_terminal: float
    # the API's job views say what the log says
    views_agree: bool
    # by the API and the workers that lived
    errors_logged: int
    statuses: Counter[int] = field(default_factory=Counter)


def errors_logged(*processes: Process) -> int:
    """Lines logged at ERROR or above: a bug's traceback (an outage is a one-line warning)."""
    return sum(
        1 for p in processes for line in list(p.output) if line.startswith(("ERROR", "CRITICAL"))
    )


class LogReader:
    """Job facts read from the log over one connection of the application role."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def outcomes(self) -> dict[str, list[str]]:
        """The outcome events (their types) recorded per job id."""
        found: dict[str, list[str]] = {}
        for row in await self._conn.fetch(_OUTCOMES):
            found.setdefault(row["job_id"], []).append(row["type"])
        return found

    async def started(self) -> list[tuple[str, str]]:
        """(job id, worker) of every attempt started, in log order."""
        return [(row["job_id"], row["worker"]) for row in await self._conn.fetch(_STARTED)]

    async def running(self) -> str | None:
        """The worker of the latest attempt still running, if any."""
        worker: str | None = await self._conn.fetchval(_RUNNING)
        return worker

    async def requeued(self) -> int:
        """How many times the sweeper handed a job to the queue again."""
        count: int = await self._conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'job.requeued'"
        )
        return count

    async def first_started(self, seconds: float) -> tuple[str, str]:
        deadline = time.monotonic() + seconds
        while not (started := await self.started()):
            assert time.monotonic() < deadline, "no job started in time"
            await asyncio.sleep(0.05)
        return started[0]

    async def cut_short(self, worker: str) -> int:
        """Attempts `worker` started that nothing ended (it died running them)."""
        count: int = await self._conn.fetchval(_CUT_SHORT, worker)
        return count

    async def until_terminal(self, job_ids: list[str], seconds: float) -> bool:
        """Wait until every job has an outcome; False if some still have none at the deadline."""
        deadline = time.monotonic() + seconds
        while set(job_ids) - set(await self.outcomes()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True


@contextlib.asynccontextmanager
async def log_reader(database_url: str) -> AsyncIterator[LogReader]:
    conn = await asyncpg.connect(database_url)
    try:
        yield LogReader(conn)
    finally:
        await conn.close()


async def registered_model(client: httpx.AsyncClient, name: str = MODEL) -> str:
    """A model with one registered version; returns the compile job its registration asked for."""
    created = await create_model(client, dict(client.headers), name)
    assert created.status_code == 201, created.text
    registered = await register_version(client, dict(client.headers), name, seed=7)
    assert registered.status_code == 201, registered.text
    job_id: str = registered.json()["compile_job_id"]
    return job_id


async def request_compile(
    client: httpx.AsyncClient, statuses: Counter[int], name: str = MODEL
) -> str | None:
    """`POST /v1/jobs` for a compile of version 1; the job id when accepted."""
    answer = await client.post("/v1/jobs", json={"kind": "compile", "model": name, "version": 1})
    statuses[answer.status_code] += 1
    return str(answer.json()["job_id"]) if answer.status_code == 202 else None


async def views(
    client: httpx.AsyncClient, job_ids: list[str], statuses: Counter[int]
) -> dict[str, str | None]:
    """Each job's status as `GET /v1/jobs/{id}` answers it."""
    found: dict[str, str | None] = {}
    for job_id in job_ids:
        answer = await client.get(f"/v1/jobs/{job_id}")
        statuses[answer.status_code] += 1
        found[job_id] = answer.json().get("status") if answer.status_code == 200 else None
    return found


async def settled_views(
    client: httpx.AsyncClient, job_ids: list[str], statuses: Counter[int], seconds: float = 30
) -> dict[str, str | None]:
    """The job views once every one is terminal (views may trail the log by a moment)."""
    deadline = time.monotonic() + seconds
    while not set((found := await views(client, job_ids, statuses)).values()) <= TERMINAL:
        assert time.monotonic() < deadline, f"job views not terminal: {found}"
        await asyncio.sleep(0.1)
    return found


async def final_views(
    client: httpx.AsyncClient, job_ids: list[str], statuses: Counter[int], *, finished: bool
) -> dict[str, str | None]:
    """The job views, waited for when every job finished in the log."""
    if finished:
        return await settled_views(client, job_ids, statuses)
    return await views(client, job_ids, statuses)


def agree(outcomes: dict[str, list[str]], found: dict[str, str | None]) -> bool:
    """True when every view says the job's outcome in the log (or that it has none)."""
    named = {"job.succeeded": "succeeded", "job.failed": "failed"}

    def says(job: str) -> bool:
        ends = outcomes.get(job)
        return found[job] == named[ends[0]] if ends else found[job] not in TERMINAL

    return all(says(job) for job in found)


async def jobs_under_worker_kill9(stack: Stack, jobs: int = 8, seconds: float = 90) -> JobsOutcome:
    """`jobs` compiles of one version requested at once; two workers take them; the one that
    started a job first is killed with SIGKILL, and a replacement started."""
    api = stack.start("serve", "--no-worker", "--port", "0", **JOB_ENV)
    url = api.listening()
    statuses: Counter[int] = Counter()
    async with (
        httpx.AsyncClient(base_url=url, headers=stack.admin_headers(), timeout=30) as client,
        log_reader(stack.database_url) as log,
    ):
        job_ids = [await registered_model(client)]
        asked = [request_compile(client, statuses) for _ in range(jobs)]
        job_ids += [job for job in await asyncio.gather(*asked) if job is not None]
        workers = [stack.start("worker", **JOB_ENV) for _ in range(2)]
        _, worker = await log.first_started(seconds)
        victim = next(w for w in workers if worker.rsplit(":", 1)[-1] == str(w.pid))
        await asyncio.to_thread(victim.kill9)
        killed_at = time.monotonic()
        replacement = stack.start("worker", **JOB_ENV)
        finished = await log.until_terminal(job_ids, seconds)
        took = time.monotonic() - killed_at
        interrupted = await log.cut_short(worker)
        outcomes = await log.outcomes()
        attempts = Counter(job for job, _ in await log.started())
        found = await final_views(client, job_ids, statuses, finished=finished)
    ends = [outcomes.get(job, []) for job in job_ids]
    return JobsOutcome(
        requested=jobs + 1,
        accepted=len(job_ids),
        terminal=sum(1 for end in ends if end),
        succeeded=sum(1 for end in ends if end == ["job.succeeded"]),
        duplicated=sum(1 for end in ends if len(end) > 1),
        never_finished=sum(1 for end in ends if not end),
        interrupted=interrupted,
        rerun=sum(1 for job in job_ids if attempts[job] > 1),
        seconds_to_terminal=round(took, 1),
        views_agree=agree(outcomes, found),
        errors_logged=errors_logged(api, *(w for w in workers if w is not victim), replacement),
        statuses=statuses,
    )
