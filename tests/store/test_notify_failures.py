"""The wake-up sent after each append (NOTIFY) is best effort: when it fails, however it fails,
it is logged and the append stands; nothing escapes the task that sends it. A torn connection
(asyncpg's InternalClientError, on returning the connection to the pool) once escaped it as
"Task exception was never retrieved", logged at ERROR during a PostgreSQL crash."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from app.resources import create_pool, open_resources
from app.settings import Settings
from app.store.events import NOTIFY_CHANNEL, EventStore
from domain import commands as cmd
from domain import events as ev


async def test_a_wake_up_that_cannot_be_sent_is_logged_not_raised(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = EventStore(pool, notify=True)
    await pool.close()  # what a notification meets is no connection at all
    store._notify_position = 7  # as an append leaves it for the sender
    await store._send_notifications()  # the body of the sender task
    assert "could not notify subscribers of position 7" in caplog.text


async def test_closing_right_after_an_append_still_wakes_the_other_processes(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A short-lived process (the first start's admin token, a CLI command) closed its pool
    while the wake-up of its only append was on its way: "pool is closing", at ERROR."""
    listener = await asyncpg.connect(database_url)
    woken: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: woken.put_nowait(args[-1]))
    try:
        async with open_resources(settings) as resources:
            await resources.projector.catch_up()  # the views are set up: appends write them
            outcome = await resources.governance.handle(
                cmd.RegisterModel(name="brief", risk_tier="low"),
                ev.EventMeta(actor="cli", role="admin"),
            )
        async with asyncio.timeout(30):
            # the position reached, and the types appended (a replica's followers wake by them)
            assert await woken.get() == f"{outcome.position} model.registered"
    finally:
        await listener.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
