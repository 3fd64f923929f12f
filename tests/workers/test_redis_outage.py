"""Workers ride out a Redis outage by themselves: a worker process (the standalone `worker`, or
the one `serve` runs beside the API) polls through a SIGKILLed Redis, and once Redis is back
(empty, or with its data) the jobs requested meanwhile run within seconds, a job whose queue
entry was lost runs too, cron lines fire again, and each job ends exactly once. Real
processes, a redis-server of the test's own, real PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from arq.constants import health_check_key_suffix, job_key_prefix

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.workers.jobs_helpers import CLI, process_env, wait_for
from tests.workers.private_redis import PrivateRedis

pytestmark = pytest.mark.processes

MODEL = "outage"
# the far future: a job queued with this score waits in Redis and no worker takes it
_NEVER = 4_000_000_000_000


@pytest.fixture(params=[False, True], ids=["restarted-empty", "restarted-with-data"])
def private_redis(request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    server = PrivateRedis(persist=request.param)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def settings(settings: Settings, private_redis: PrivateRedis) -> Settings:
    return msgspec.structs.replace(
        settings,
        redis_url=private_redis.url,
        dispatch_jobs=True,
        job_timeout_seconds=120.0,
        job_sweep_interval_seconds=0.5,
    )


class WorkerProcess:
    """`model-ledger worker`, or `model-ledger serve --worker`, on the test's stores."""

    def __init__(self, command: list[str], settings: Settings, log: Path) -> None:
        env = process_env(
            settings,
            MODEL_LEDGER_JOB_TIMEOUT_SECONDS="120",
            MODEL_LEDGER_JOB_SWEEP_INTERVAL_SECONDS="0.5",
            MODEL_LEDGER_CHECKPOINT_INTERVAL_SECONDS="3600",
            MODEL_LEDGER_PORT="0",
        )
        self.log = log
        with log.open("wb") as sink:
            # a session of its own, so stopping it takes its process-pool children too
            self.process = subprocess.Popen(
                [CLI, *command],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def printed(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            # Ctrl-C, as an operator stops either (uvicorn re-raises a SIGTERM after its
            # clean shutdown, which would end `serve` with -15)
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=30)


async def _outcomes(resources: Resources) -> collections.Counter[str]:
    """Outcomes recorded per job id (exactly one each is the contract)."""
    counted: collections.Counter[str] = collections.Counter()
    for recorded in await resources.store.read_stream(model_stream(MODEL)):
        event = recorded.event
        if isinstance(event, ev.JobSucceeded) or (isinstance(event, ev.JobFailed) and event.final):
            counted[event.job_id] += 1
    return counted


async def _started_since(resources: Resources, since: datetime) -> bool:
    return any(
        isinstance(r.event, ev.JobStarted) and r.recorded_at > since
        for r in await resources.store.read_stream(model_stream(MODEL))
    )


async def _compile(client: httpx.AsyncClient, ci: dict[str, str]) -> str:
    body = {"kind": "compile", "model": MODEL, "version": 1}
    requested = await client.post("/v1/jobs", json=body, headers=ci)
    assert requested.status_code == 202, requested.text
    job_id: str = requested.json()["job_id"]
    return job_id


@pytest.mark.parametrize("command", [["worker"], ["serve", "--worker"]], ids=["worker", "serve"])
async def test_a_worker_resumes_by_itself_after_redis_is_killed_and_started_again(
    command: list[str],
    settings: Settings,
    private_redis: PrivateRedis,
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    tmp_path: Path,
) -> None:
    ci = await auth("ci")
    queue = resources.redis
    assert (await create_model(client, ci, MODEL)).status_code == 201
    created = await register_version(client, ci, MODEL, seed=12)
    assert created.status_code == 201, created.text
    expected = [created.json()["compile_job_id"]]

    # queued before the outage and not taken yet: Redis restarted empty forgets it
    if not private_redis.persist:
        lost = await _compile(client, ci)
        await wait_for(lambda: queue.exists(job_key_prefix + lost), seconds=30)
        await queue.zadd(settings.queue_name, {lost: _NEVER})
        expected.append(lost)

    worker = WorkerProcess(command, settings, tmp_path / "worker.log")
    try:
        health = settings.queue_name + health_check_key_suffix
        await wait_for(lambda: queue.exists(health), seconds=120)

        async def first_done() -> bool:
            return (await _outcomes(resources))[expected[0]] == 1

        await wait_for(first_done, seconds=120)

        await asyncio.to_thread(private_redis.kill)

        async def noticed() -> bool:  # (or died of it, as workers did)
            ended = worker.process.poll() is not None
            return ended or await asyncio.to_thread(worker.printed, "waits for Redis")

        await wait_for(noticed, seconds=30)
        # requested while Redis is down: the requests wait in the log
        expected += [await _compile(client, ci) for _ in range(4)]

        restarted_at = await resources.store.pool.fetchval("SELECT clock_timestamp()")
        answered = await asyncio.to_thread(private_redis.start)

        async def running_again() -> bool:
            return await _started_since(resources, restarted_at)

        await wait_for(running_again, seconds=60, every=0.05)
        recovered = time.monotonic() - answered

        async def all_done() -> bool:
            return set(await _outcomes(resources)) >= set(expected)

        await wait_for(all_done, seconds=180, every=0.2)
        finished = time.monotonic() - answered

        async def signed_again() -> bool:
            signed = await resources.store.pool.fetchval(
                "SELECT count(*) FROM checkpoints WHERE signed_at > $1", restarted_at
            )
            return bool(signed)

        await wait_for(signed_again, seconds=90, every=0.2)  # the checkpoint cron fires again
        assert worker.process.poll() is None, "the worker process ended"
        print(  # the figure this test measures
            f"\n{command[0]}, Redis {'with its data' if private_redis.persist else 'empty'}: "
            f"first job started {recovered:.1f}s after Redis answered again, "
            f"all {len(expected)} done after {finished:.1f}s"
        )
    finally:
        code = await asyncio.to_thread(worker.stop)
    assert code == 0, worker.log.read_text(errors="replace")[-4000:]

    outcomes = await _outcomes(resources)
    assert {job_id: outcomes[job_id] for job_id in expected} == dict.fromkeys(expected, 1)
    for job_id in expected:
        assert (await resources.jobs.view(job_id)).status == "succeeded"
