"""The arq worker: settings class, shared resources in `ctx`, and housekeeping crons.

Job kinds (train, compile, compliance, drift, bandit) register here as they are built.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings
from arq.worker import check_health
from arq.worker import run_worker as arq_run_worker

from app.resources import open_resources
from app.settings import Settings


async def sign_checkpoint(ctx: dict[str, Any]) -> int | None:
    """Sign the head of the log if it moved since the last checkpoint."""
    checkpoint = await ctx["resources"].checkpointer.sign_head()
    return None if checkpoint is None else checkpoint.position


async def catch_up_projections(ctx: dict[str, Any]) -> int:
    """Bring every view up to the head of the log."""
    position: int = await ctx["resources"].projector.catch_up()
    return position


def worker_settings(settings: Settings) -> type:
    """An arq WorkerSettings class bound to these settings."""
    assert settings.redis_url is not None
    arq_redis = RedisSettings.from_dsn(settings.redis_url)

    async def startup(ctx: dict[str, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        ctx["stack"] = stack
        ctx["resources"] = await stack.enter_async_context(open_resources(settings))

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["stack"].aclose()

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [sign_checkpoint, catch_up_projections]
        cron_jobs: ClassVar[list[Any]] = [
            cron(sign_checkpoint, second=0, unique=True, run_at_startup=True),
            cron(catch_up_projections, second={0, 15, 30, 45}, unique=True),
        ]
        redis_settings = arq_redis
        queue_name = settings.queue_name
        on_startup = startup
        on_shutdown = shutdown
        handle_signals = True

    return WorkerSettings


def run_worker(settings: Settings) -> None:
    """Run a worker until interrupted."""
    arq_run_worker(worker_settings(settings))


def check_worker(settings: Settings) -> int:
    """0 when a worker has recently written its health sentinel to Redis, else 1."""
    return check_health(worker_settings(settings))
