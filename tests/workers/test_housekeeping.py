"""The worker's housekeeping jobs, run by a real arq burst worker on real Redis."""

from __future__ import annotations

import pytest
from arq import create_pool
from arq.worker import Worker

from app.resources import Resources
from app.settings import Settings
from app.store.checkpoints import list_checkpoints
from tests.conftest import TokenFactory
from workers.main import worker_settings

pytestmark = pytest.mark.processes


async def test_a_burst_worker_signs_the_head(
    settings: Settings, resources: Resources, auth: TokenFactory
) -> None:
    await auth("ci")
    config = worker_settings(settings)
    redis = await create_pool(config.redis_settings)
    try:
        await redis.enqueue_job("sign_checkpoint", _queue_name=settings.queue_name)
        await redis.enqueue_job("catch_up_projections", _queue_name=settings.queue_name)
        worker = Worker(
            functions=config.functions,
            redis_settings=config.redis_settings,
            queue_name=settings.queue_name,
            on_startup=config.on_startup,
            on_shutdown=config.on_shutdown,
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        await worker.main()
        await worker.close()
        assert (worker.jobs_complete, worker.jobs_failed) == (2, 0)
    finally:
        await redis.aclose()
    checkpoints = await list_checkpoints(resources.store)
    assert [c.position for c in checkpoints] == [1]
