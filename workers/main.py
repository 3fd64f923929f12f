"""The arq worker: settings class, shared resources in `ctx`, job kinds and housekeeping crons.

Every job kind runs through one arq function, `run_job`, enqueued by the dispatcher with the
job's id; the worker also runs a dispatcher and a sweeper of its own, so requests reach the
queue, and stalled jobs are requeued, even when no API process is up. Every worker is a
`SupervisedWorker` on a `queue_connection`: a Redis outage pauses it, never ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar
from wsgiref.simple_server import WSGIServer

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, check_health

from app.logs import configure_logging
from app.resources import open_resources
from app.services.dispatch import arq_job_timeout, queue_connection
from app.services.retraining import ALERTS as RETRAINING_ALERTS
from app.settings import Settings
from app.store.watch import LogWatcher
from workers.jobs import FOLLOW_UPS, KINDS
from workers.jobs.schedule import (
    schedule_data_quality_checks,
    schedule_drift_checks,
    schedule_experiment_looks,
    schedule_performance_checks,
)
from workers.metrics import serve_metrics
from workers.pool import ProcessPool
from workers.runner import JobRunner, run_job
from workers.supervised import SupervisedWorker

# attempts are counted and bounded in the log (workers/runner.py); arq's count only stops a
# job that keeps failing before any attempt could start (the database away for hours)
_ARQ_MAX_TRIES = 100


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


async def schedule_data_quality(ctx: dict[str, Any]) -> int:
    """Request the data-quality checks that are due (arq cron, with the drift checks)."""
    return await schedule_data_quality_checks(ctx["resources"])


async def schedule_performance(ctx: dict[str, Any]) -> int:
    """Request the performance checks that are due (arq cron, every performance_check_minutes)."""
    return await schedule_performance_checks(ctx["resources"])


async def schedule_experiments(ctx: dict[str, Any]) -> int:
    """Request a look at every running A/B experiment (arq cron, every
    experiment_look_minutes)."""
    return await schedule_experiment_looks(ctx["resources"])


def worker_settings(settings: Settings) -> type:
    """An arq WorkerSettings class bound to these settings."""
    assert settings.redis_url is not None
    arq_redis = RedisSettings.from_dsn(settings.redis_url)
    drift_minutes = set(range(0, 60, max(1, min(60, settings.drift_check_minutes))))
    performance_minutes = set(range(0, 60, max(1, min(60, settings.performance_check_minutes))))
    look_minutes = set(range(0, 60, max(1, min(60, settings.experiment_look_minutes))))

    async def startup(ctx: dict[str, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        ctx["stack"] = stack
        resources = await stack.enter_async_context(open_resources(settings))
        ctx["resources"] = resources
        stack.push_async_callback(resources.checkpointer.drain)
        pool = ProcessPool(settings.job_processes)
        stack.callback(pool.close)
        ctx["runner"] = JobRunner(resources, pool, KINDS, FOLLOW_UPS)
        served = serve_metrics(settings.host, settings.worker_metrics_port)
        if served is not None:
            stack.callback(stop_serving, served[0])
        if settings.dispatch_jobs:
            assert settings.database_url is not None
            watcher = LogWatcher(
                resources.store,
                settings.database_url,
                min_interval=settings.follow_interval_seconds,
            )
            await watcher.start()
            stack.push_async_callback(watcher.stop)
            task = asyncio.create_task(resources.dispatcher.run(watcher.subscribe().wait))
            stack.push_async_callback(_cancel, task)
            sweeping = asyncio.create_task(resources.sweeper.run())
            stack.push_async_callback(_cancel, sweeping)
            reacting = asyncio.create_task(
                resources.retraining.run(watcher.subscribe(only=RETRAINING_ALERTS).wait)
            )
            stack.push_async_callback(_cancel, reacting)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["stack"].aclose()

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [
            run_job,
            sign_checkpoint,
            catch_up_projections,
            schedule_drift,
            schedule_performance,
            schedule_data_quality,
            schedule_experiments,
        ]
        cron_jobs: ClassVar[list[Any]] = [
            cron(sign_checkpoint, second=0, unique=True, run_at_startup=True),
            cron(catch_up_projections, second={0, 15, 30, 45}, unique=True),
            cron(schedule_drift, minute=drift_minutes, second=30, unique=True),
            cron(schedule_performance, minute=performance_minutes, second=45, unique=True),
            cron(schedule_data_quality, minute=drift_minutes, second=40, unique=True),
            cron(schedule_experiments, minute=look_minutes, second=50, unique=True),
        ]
        redis_settings = arq_redis
        queue_name = settings.queue_name
        on_startup = startup
        on_shutdown = shutdown
        handle_signals = True
        max_jobs = settings.worker_max_jobs
        max_tries = _ARQ_MAX_TRIES
        # past our own timeout of the computation, so that one fires first and is recorded
        job_timeout = arq_job_timeout(settings)
        # the outcome lives in the log; arq's copy only needs to outlast a duplicate delivery
        keep_result = 3600
        # `worker --check` and the sweeper read this sentinel: it lapses 31 s after a worker
        # stops polling, and comes back that soon after Redis restarted empty
        health_check_interval = 30

    return WorkerSettings


def stop_serving(server: WSGIServer) -> None:
    """Stop a worker's metrics server."""
    server.shutdown()
    server.server_close()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_worker(settings: Settings) -> None:
    """Run a worker until interrupted."""
    # the format `serve` logs in (arq's own lines included), with the time
    configure_logging(settings.log_level, timestamps=True)
    _worker(settings).run()


def _worker(settings: Settings, **overrides: Any) -> Worker:
    assert settings.redis_url is not None
    options = {k: v for k, v in vars(worker_settings(settings)).items() if not k.startswith("_")}
    pool = queue_connection(settings.redis_url, settings.queue_name)
    return SupervisedWorker(**{**options, "redis_pool": pool, **overrides})


def in_process_worker(settings: Settings) -> Worker:
    """A worker to run beside the API in one process (the embedded stack): the API's
    server handles the signals."""
    return _worker(settings, handle_signals=False)


def burst_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker that stops when the queue is empty (tests, one-off runs)."""
    return _worker(settings, burst=True, handle_signals=False, **overrides)


def check_worker(settings: Settings) -> int:
    """0 when a worker has recently written its health sentinel to Redis, else 1."""
    return check_health(worker_settings(settings))
