"""The arq worker: settings class, shared resources in `ctx`, job kinds and housekeeping crons.

Every job kind runs through one arq function, `run_job`, enqueued by the dispatcher with the
job's id; the worker also runs a dispatcher of its own, so requests reach the queue even when
no API process is up.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, check_health
from arq.worker import run_worker as arq_run_worker

from app.resources import open_resources
from app.settings import Settings
from app.store.watch import LogWatcher
from workers.jobs import FOLLOW_UPS, KINDS
from workers.jobs.schedule import schedule_drift_checks
from workers.pool import ProcessPool
from workers.runner import JobRunner, run_job


async def sign_checkpoint(ctx: dict[str, Any]) -> int | None:
    """Sign the head of the log if it moved since the last checkpoint."""
    checkpoint = await ctx["resources"].checkpointer.sign_head()
    return None if checkpoint is None else checkpoint.position


async def catch_up_projections(ctx: dict[str, Any]) -> int:
    """Bring every view up to the head of the log."""
    position: int = await ctx["resources"].projector.catch_up()
    return position


async def schedule_drift(ctx: dict[str, Any]) -> int:
    """Request the drift checks that are due (arq cron, every drift_check_minutes)."""
    return await schedule_drift_checks(ctx["resources"])


def worker_settings(settings: Settings) -> type:
    """An arq WorkerSettings class bound to these settings."""
    assert settings.redis_url is not None
    arq_redis = RedisSettings.from_dsn(settings.redis_url)
    drift_minutes = set(range(0, 60, max(1, min(60, settings.drift_check_minutes))))

    async def startup(ctx: dict[str, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        ctx["stack"] = stack
        resources = await stack.enter_async_context(open_resources(settings))
        ctx["resources"] = resources
        stack.push_async_callback(resources.checkpointer.drain)
        pool = ProcessPool(settings.job_processes)
        stack.callback(pool.close)
        ctx["runner"] = JobRunner(resources, pool, KINDS, FOLLOW_UPS)
        if settings.dispatch_jobs:
            assert settings.database_url is not None
            watcher = LogWatcher(resources.store, settings.database_url)
            await watcher.start()
            stack.push_async_callback(watcher.stop)
            task = asyncio.create_task(resources.dispatcher.run(watcher.subscribe().wait))
            stack.push_async_callback(_cancel, task)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["stack"].aclose()

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [
            run_job,
            sign_checkpoint,
            catch_up_projections,
            schedule_drift,
        ]
        cron_jobs: ClassVar[list[Any]] = [
            cron(sign_checkpoint, second=0, unique=True, run_at_startup=True),
            cron(catch_up_projections, second={0, 15, 30, 45}, unique=True),
            cron(schedule_drift, minute=drift_minutes, second=30, unique=True),
        ]
        redis_settings = arq_redis
        queue_name = settings.queue_name
        on_startup = startup
        on_shutdown = shutdown
        handle_signals = True
        max_jobs = settings.worker_max_jobs
        # one more than ours: the attempt past the last one records that the job gave up
        max_tries = settings.job_max_tries + 1
        # past our own timeout of the computation, so that one fires first and is recorded
        job_timeout = settings.job_timeout_seconds + max(5.0, settings.job_timeout_seconds / 10)
        # the outcome lives in the log; arq's copy only needs to outlast a duplicate delivery
        keep_result = 3600

    return WorkerSettings


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_worker(settings: Settings) -> None:
    """Run a worker until interrupted."""
    arq_run_worker(worker_settings(settings))


def _options(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in vars(worker_settings(settings)).items() if not k.startswith("_")}


def in_process_worker(settings: Settings) -> Worker:
    """A worker to run beside the API in one process (the embedded stack): the API's
    server handles the signals."""
    return Worker(**{**_options(settings), "handle_signals": False})


def burst_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker that stops when the queue is empty (tests, one-off runs)."""
    return Worker(**{**_options(settings), "burst": True, "handle_signals": False, **overrides})


def check_worker(settings: Settings) -> int:
    """0 when a worker has recently written its health sentinel to Redis, else 1."""
    return check_health(worker_settings(settings))
