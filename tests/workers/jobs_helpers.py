"""Running jobs in tests: a real arq burst worker on real Redis, and reading what jobs wrote."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.resources import Resources
from app.settings import Settings
from domain.decide import model_stream
from domain.events import event_type
from workers.main import burst_worker


async def run_worker(settings: Settings, **overrides: Any) -> tuple[int, int]:
    """Relay pending requests, then run a burst worker until the queue is empty.

    Returns (jobs complete, jobs failed) as arq counts them.
    """
    worker = burst_worker(settings, poll_delay=0.05, cron_jobs=[], **overrides)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker.jobs_complete, worker.jobs_failed


async def stream_types(resources: Resources, name: str) -> list[str]:
    """The event types of a model's stream, in order."""
    return [event_type(e.event) for e in await resources.store.read_stream(model_stream(name))]


async def job_status(
    client: httpx.AsyncClient, headers: dict[str, str], resources: Resources, job_id: str
) -> dict[str, Any]:
    """GET /v1/jobs/{id}, once the views include what the worker (another process) appended."""
    await resources.projector.catch_up()
    response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(predicate: Any, seconds: float = 60.0, every: float = 0.1) -> None:
    """Poll an async predicate until it holds (for processes outside the test's control)."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(every)


CLI = str(Path(sys.executable).parent / "model-ledger")


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `model-ledger` process on the test's stores and queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
    env.update(
        MODEL_LEDGER_HOME=str(settings.home),
        MODEL_LEDGER_DATABASE_URL=str(settings.database_url),
        MODEL_LEDGER_REDIS_URL=str(settings.redis_url),
        MODEL_LEDGER_QUEUE_NAME=settings.queue_name,
        **extra,
    )
    return env


def worker_process(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    """`model-ledger worker` in a session of its own, so a kill of the session takes its
    process-pool children too."""
    return subprocess.Popen(
        [CLI, "worker"],
        env=process_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
