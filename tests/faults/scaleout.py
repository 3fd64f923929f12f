"""Scale-out on one machine: two APIs, two workers and two scorers on one PostgreSQL and one
Redis, under concurrent CI writes and scoring, while one of each is killed with SIGKILL.

What each client was told (2xx) is checked against the log afterwards; how long the scorers
took to follow a promotion and a rollback made on another process is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx

from app.store.events import LOG_LOCK
from tests.faults import story
from tests.faults.commands import model_ledger
from tests.faults.harness import Process
from tests.faults.jobs import JOB_ENV, LogReader, errors_logged, log_reader
from tests.faults.load import PatientWrites, log_facts
from tests.faults.stack import Stack

ROW = {"rows": [[0.5, 40.0, 13.0, 2.0]]}
ENVIRONMENT = "production"
# versions registered and compile jobs requested by each API's CI client
VERSIONS_PER_API, JOBS_PER_API = 2, 2
_AT = "SELECT position, type, data FROM events WHERE position = ANY($1::bigint[])"
_REQUESTED = "SELECT data->>'job_id' AS job_id FROM events WHERE type = 'job.requested'"


@dataclass
class Acknowledged:
    """Writes other than model registrations answered 2xx: at each position an answer named,
    the event type expected there and a (field, value) of its data."""

    at: dict[int, tuple[str, str, object]] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def job(self, position: int, job_id: str) -> None:
        self.at[position] = ("job.requested", "job_id", job_id)
        self.job_ids.append(job_id)


@dataclass
class Scores:
    """Every answer of every scorer: (scorer, sent at, status, version served)."""

    answers: list[tuple[int, float, int, int | None]] = field(default_factory=list)
    transport_errors: Counter[int] = field(default_factory=Counter)

    def versions_sent_between(self, scorer: int, start: float, end: float) -> Counter[int | None]:
        return Counter(
            version
            for who, sent, status, version in list(self.answers)
            if who == scorer and start <= sent < end and status == 200
        )

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for _, _, status, _ in self.answers)


@dataclass(frozen=True)
class ScaleOutcome:
    """What the load left in the log, and how the scorers followed the deployments."""

    acknowledged_models: int
    lost_models: int
    acknowledged_other: int
    # positions named by a 2xx answer where the log holds something else (or nothing)
    misplaced: int
    gap_free: bool
    # job ids in the log's job.requested events, and those acknowledged to a client
    jobs_requested: int
    jobs_acknowledged: int
    never_finished: int
    duplicated: int
    interrupted: int
    # seconds from the promotion (or rollback) request to each live scorer serving it
    promotion_seconds: tuple[float, ...]
    rollback_seconds: tuple[float, ...]
    # answers naming the old version from requests sent once a scorer had switched
    stale_after_switch: int
    scored: int
    # scoring requests the surviving scorer failed to answer at all
    survivor_unreachable: int
    verify_ok: bool
    api_verify_ok: bool
    errors_logged: int
    write_statuses: Counter[int]
    score_statuses: Counter[int]


async def _served(remote: httpx.AsyncClient, name: str, headers: dict[str, str]) -> int | None:
    answer = await remote.post(
        f"/v1/score/{name}", json=ROW, params={"environment": ENVIRONMENT}, headers=headers
    )
    return int(answer.json()["version"]) if answer.status_code == 200 else None


async def _converged(
    url: str, name: str, headers: dict[str, str], version: int, since: float, seconds: float = 60
) -> float:
    """Seconds from `since` until the scorer at `url` serves `version`."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as remote:
        while await _served(remote, name, headers) != version:
            assert time.monotonic() - since < seconds, f"{url} not on v{version} in {seconds} s"
            await asyncio.sleep(0.02)
    return time.monotonic() - since


async def _all_converged(
    urls: list[str], name: str, headers: dict[str, str], version: int, since: float
) -> tuple[float, ...]:
    found = await asyncio.gather(*(_converged(u, name, headers, version, since) for u in urls))
    return tuple(round(seconds, 2) for seconds in found)


async def _score_forever(
    scores: Scores, who: int, url: str, name: str, headers: dict[str, str], stop: asyncio.Event
) -> None:
    """Score until `stop`; a scorer gone (transport error) ends this client."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as remote:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answer = await remote.post(
                    f"/v1/score/{name}", json=ROW, params={"environment": ENVIRONMENT}
                )
            except httpx.TransportError:
                scores.transport_errors[who] += 1
                return
            version = answer.json().get("version") if answer.status_code == 200 else None
            scores.answers.append((who, sent, answer.status_code, version))


@dataclass(frozen=True)
class Fleet:
    """The processes of the scale-out: two of each kind, on one stack."""

    apis: tuple[Process, Process]
    urls: tuple[str, str]
    workers: tuple[Process, Process]
    scorers: tuple[Process, Process]
    scorer_urls: tuple[str, str]


def start_fleet(stack: Stack) -> Fleet:
    """Two APIs (the first alone while it prepares the log), two workers, two scorers."""
    first = stack.start("serve", "--no-worker", "--port", "0", **JOB_ENV)
    first_url = first.listening()
    second = stack.start("serve", "--no-worker", "--port", "0", **JOB_ENV)
    workers = (stack.start("worker", **JOB_ENV), stack.start("worker", **JOB_ENV))
    scorers = tuple(
        stack.start("scorer", "--port", "0", MODEL_LEDGER_SCORER_INSTANCE=f"scale{n}", **JOB_ENV)
        for n in range(2)
    )
    return Fleet(
        apis=(first, second),
        urls=(first_url, second.listening()),
        workers=workers,
        scorers=(scorers[0], scorers[1]),
        scorer_urls=(scorers[0].listening(), scorers[1].listening()),
    )


async def deployed(client: httpx.AsyncClient) -> tuple[story.Cast, str, int, int]:
    """A model with two versions the workers compiled, both approved, the first champion."""
    cast = await story.cast(client, "scaled", 1)
    name = cast.models[0]
    first = await story.register_version(client, cast.ci, name, 0)
    second = await story.register_version(client, cast.ci, name, 1)
    await story.until_compiled(client, [(name, first), (name, second)])
    for number in (first, second):
        await story.approve(client, cast.approvers[0], name, number, "approve")
    await story.promote(client, cast.ci, name, first, ENVIRONMENT)
    return cast, name, first, second


async def _versions(client: httpx.AsyncClient, name: str, acked: Acknowledged) -> None:
    """A model of `name` and versions registered (each asks for a compile)."""
    created = await client.post("/v1/models", json={"name": name, "risk_tier": "low"})
    acked.statuses[created.status_code] += 1
    assert created.status_code == 201, created.text
    acked.models.append(name)
    for seed in range(VERSIONS_PER_API):
        body = await story.registration(client, dict(client.headers), name, seed)
        acked.at[int(str(body["position"]))] = ("version.registered", "version", body["version"])
        acked.job_ids.append(str(body["compile_job_id"]))


async def _compiles(
    client: httpx.AsyncClient, name: str, acked: Acknowledged, first_seed: int
) -> None:
    """Versions of artifacts never compiled before registered at once: their compiles run for
    real (one of an artifact compiled before ends at once, from the cache, and a kill meant
    for a running attempt then lands after it)."""
    bodies = await asyncio.gather(
        *(
            story.registration(client, dict(client.headers), name, first_seed + i)
            for i in range(JOBS_PER_API)
        )
    )
    for body in bodies:
        acked.at[int(str(body["position"]))] = ("version.registered", "version", body["version"])
        acked.job_ids.append(str(body["compile_job_id"]))


async def _change(
    client: httpx.AsyncClient, path: str, body: dict[str, object], acked: Acknowledged
) -> None:
    """A promotion or rollback; its champion recorded as acknowledged."""
    answer = await client.post(path, json=body)
    acked.statuses[answer.status_code] += 1
    assert answer.status_code in (200, 201), answer.text
    changed = answer.json()
    acked.at[changed["position"]] = ("deployment.changed", "champion", changed["champion"])


async def _running_worker(log: LogReader, workers: tuple[Process, Process]) -> tuple[Process, str]:
    """The worker of the latest attempt still running, and its name in the log."""
    deadline = time.monotonic() + 120
    while (worker := await log.running()) is None:
        assert time.monotonic() < deadline, "no job running to kill a worker under"
        await asyncio.sleep(0.02)
    return next(w for w in workers if worker.rsplit(":", 1)[-1] == str(w.pid)), worker


async def _stopped_mid_job(
    log: LogReader, database_url: str, workers: tuple[Process, Process]
) -> tuple[Process, str]:
    """A worker frozen (SIGSTOP) while an attempt of its own is surely unended, so a SIGKILL
    now cuts it short. The log alone cannot promise that: a job may end between a look at the
    log and the kill (it did, on a clean-clone run). Frozen, the worker appends nothing new;
    taking the log's append lock then waits out an append it had in flight (or finds it
    holding the lock, mid-transaction: that append cannot commit any more); only then is
    its attempt checked again. An attempt that ended meanwhile: thawed, and another sought."""
    deadline = time.monotonic() + 120
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET lock_timeout = '2s'")
        while True:
            victim, name = await _running_worker(log, workers)
            os.kill(victim.pid, signal.SIGSTOP)
            with contextlib.suppress(asyncpg.LockNotAvailableError):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)
            if await log.cut_short(name):
                return victim, name
            os.kill(victim.pid, signal.SIGCONT)
            assert time.monotonic() < deadline, "no running job to freeze a worker under"
    finally:
        await conn.close()


def _load(
    fleet: Fleet,
    writes: list[PatientWrites],
    scores: Scores,
    tokens: tuple[dict[str, str], dict[str, str]],
    name: str,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """Four writers on each API (CI's token), two scoring clients on each scorer (admin's)."""
    ci, admin = tokens
    pairs = zip(writes, fleet.urls, strict=True)
    scoring = [(n, url) for n, url in enumerate(fleet.scorer_urls) for _ in range(2)]
    return [
        *(asyncio.create_task(w.run(url, ci, stop, writers=4)) for w, url in pairs),
        *(
            asyncio.create_task(_score_forever(scores, n, url, name, admin, stop))
            for n, url in scoring
        ),
    ]


async def _misplaced(database_url: str, acked: Acknowledged) -> int:
    """Acknowledged positions where the log holds another event (or none)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(_AT, list(acked.at))
    finally:
        await conn.close()
    found = {row["position"]: (row["type"], json.loads(row["data"])) for row in rows}
    wrong = 0
    for position, (kind, key, value) in acked.at.items():
        held = found.get(position)
        wrong += held is None or held[0] != kind or held[1].get(key) != value
    return wrong


async def _requested_jobs(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {row["job_id"] for row in await conn.fetch(_REQUESTED)}
    finally:
        await conn.close()


def _stale(scores: Scores, scorer: int, since: float, until: float, version: int) -> int:
    """Answers naming another version to requests sent in [since, until)."""
    served = scores.versions_sent_between(scorer, since, until)
    return sum(count for served_version, count in served.items() if served_version != version)


async def _verified(stack: Stack, client: httpx.AsyncClient) -> tuple[bool, bool]:
    """`model-ledger verify` and the API's verify endpoint, each ok or not."""
    done = await model_ledger("verify", env=stack.env())
    assert done.status in (0, 1), str(done)
    answer = await client.get("/v1/audit/verify", headers=stack.admin_headers())
    assert answer.status_code == 200, answer.text
    return bool(json.loads(done.stdout)["ok"]), bool(answer.json()["ok"])


async def scale_out_under_kill9(stack: Stack, writes_per_phase: int = 40) -> ScaleOutcome:
    """Two of each process under CI writes and scoring on both APIs and both scorers; a
    promotion, then kill -9 of one API, one worker (mid-job) and one scorer, then a rollback."""
    fleet = start_fleet(stack)
    admin = stack.admin_headers()
    first_api = httpx.AsyncClient(base_url=fleet.urls[0], headers=admin, timeout=60)
    async with first_api as client, log_reader(stack.database_url) as log:
        cast, name, first, second = await deployed(client)
        await _all_converged(list(fleet.scorer_urls), name, admin, first, time.monotonic())
        apis = [httpx.AsyncClient(base_url=url, headers=cast.ci, timeout=60) for url in fleet.urls]
        writes, acked, scores = (
            [PatientWrites(f"api{n}") for n in range(2)],
            Acknowledged(),
            Scores(),
        )
        stop = asyncio.Event()
        load = _load(fleet, writes, scores, (cast.ci, admin), name, stop)
        try:
            await asyncio.gather(*(_versions(a, f"jobs-{n}", acked) for n, a in enumerate(apis)))
            for w in writes:
                await w.until_acknowledged(writes_per_phase)
            path = f"/v1/models/{name}"
            promoted = time.monotonic()
            promotion = {"version": second, "environment": ENVIRONMENT, "strategy": "full"}
            await _change(apis[1], f"{path}/promotions", promotion, acked)
            promotion_seconds = await _all_converged(
                list(fleet.scorer_urls), name, admin, second, promoted
            )
            # kill -9 mid-load: compiles just requested on both APIs, a worker running one
            await asyncio.gather(
                *(_compiles(a, f"jobs-{n}", acked, 10 + 10 * n) for n, a in enumerate(apis))
            )
            victim, victim_name = await _stopped_mid_job(log, stack.database_url, fleet.workers)
            for process in (victim, fleet.apis[0], fleet.scorers[0]):
                await asyncio.to_thread(process.kill9)
            rolled = time.monotonic()
            rollback = {"environment": ENVIRONMENT, "reason": "scale-out rollback"}
            await _change(apis[1], f"{path}/rollbacks", rollback, acked)
            rollback_seconds = await _all_converged(
                [fleet.scorer_urls[1]], name, admin, first, rolled
            )
            await writes[1].until_acknowledged(len(writes[1].acknowledged) + writes_per_phase)
        finally:
            stop.set()
            ended = await asyncio.gather(*load, return_exceptions=True)
            for api in apis:
                await api.aclose()
        assert not [e for e in ended if isinstance(e, BaseException)], ended
        ended_at = time.monotonic()
        requested = await _requested_jobs(stack.database_url)
        await log.until_terminal(sorted(requested | set(acked.job_ids)), 180)
        outcomes = await log.outcomes()
        interrupted = await log.cut_short(victim_name)
        facts = await log_facts(stack.database_url)
        survivor = httpx.AsyncClient(base_url=fleet.urls[1], timeout=60)
        async with survivor:
            verify_ok, api_verify_ok = await _verified(stack, survivor)
    switched = [promoted + s for s in promotion_seconds]
    stale = sum(_stale(scores, n, switched[n], rolled, second) for n in range(2))
    stale += _stale(scores, 1, rolled + rollback_seconds[0], ended_at, first)
    ends = [outcomes.get(job, []) for job in requested | set(acked.job_ids)]
    survivors = (fleet.apis[1], *(w for w in fleet.workers if w is not victim), fleet.scorers[1])
    acknowledged = {n for w in writes for n in w.acknowledged} | set(acked.models)
    return ScaleOutcome(
        acknowledged_models=len(acknowledged),
        lost_models=len(acknowledged - facts.registered),
        acknowledged_other=len(acked.at),
        misplaced=await _misplaced(stack.database_url, acked),
        gap_free=facts.count == facts.head,
        jobs_requested=len(requested),
        jobs_acknowledged=len(acked.job_ids),
        never_finished=sum(1 for end in ends if not end),
        duplicated=sum(1 for end in ends if len(end) > 1),
        interrupted=interrupted,
        promotion_seconds=promotion_seconds,
        rollback_seconds=rollback_seconds,
        stale_after_switch=stale,
        scored=scores.statuses[200],
        survivor_unreachable=scores.transport_errors[1],
        verify_ok=verify_ok,
        api_verify_ok=api_verify_ok,
        errors_logged=errors_logged(*survivors),
        write_statuses=sum((w.statuses for w in writes), acked.statuses),
        score_statuses=scores.statuses,
    )
