"""The worker's housekeeping jobs, run by a real arq burst worker on real Redis."""

from __future__ import annotations

import logging

import pytest
from arq import create_pool
from arq.worker import Worker

from app.logs import configure_logging
from app.resources import Resources
from app.settings import Settings
from app.store.checkpoints import list_checkpoints
from tests.conftest import TokenFactory
from workers.main import burst_worker, worker_settings

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


async def _arq_lines(settings: Settings, caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    """What arq logs while a burst worker (crons included) runs one requested job."""
    configure_logging(level)
    caplog.clear()
    redis = await create_pool(worker_settings(settings).redis_settings)
    try:
        await redis.enqueue_job("catch_up_projections", _queue_name=settings.queue_name)
    finally:
        await redis.aclose()
    worker = burst_worker(settings, poll_delay=0.05)
    try:
        await worker.main()
    finally:
        await worker.close()
    return [r.getMessage() for r in caplog.records if r.name == "arq.worker"]


async def test_arq_housekeeping_lines_show_only_at_debug(
    settings: Settings, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    """A quiet `serve` printed arq's cron lines every 15 s; requested jobs still show."""
    caplog.set_level(logging.DEBUG, logger="arq.worker")
    root = logging.getLogger()
    before = root.level
    try:
        quiet = await _arq_lines(settings, caplog, "info")
        loud = await _arq_lines(settings, caplog, "debug")  # which also drops the filter
    finally:
        configure_logging("debug")  # no filter left behind for other tests
        root.setLevel(before)
    ran = [line for line in loud if "cron:sign_checkpoint" in line]
    assert ran, loud  # the startup checkpoint ran as a cron job, and said so at debug
    assert not [line for line in quiet if "→ cron:" in line or "← cron:" in line], quiet
    assert [line for line in quiet if line.startswith("Starting worker")], quiet
    assert [line for line in quiet if ":catch_up_projections()" in line], quiet


def test_the_log_level_holds_when_logging_was_configured_before() -> None:
    """pgserver installs a root handler before `serve` configures logging, and basicConfig
    then ignored the level: `--log-level warning` still logged INFO."""
    root = logging.getLogger()
    assert root.handlers  # pytest's, as pgserver's would be
    before = root.level
    try:
        configure_logging("warning")
        assert root.getEffectiveLevel() == logging.WARNING
        configure_logging("debug")
        assert root.getEffectiveLevel() == logging.DEBUG
    finally:
        root.setLevel(before)
