"""The wake-up sent after each append (NOTIFY) is best effort: when it fails, however it fails,
it is logged and the append stands; nothing escapes the task that sends it. A torn connection
(asyncpg's InternalClientError, on returning the connection to the pool) once escaped it as
"Task exception was never retrieved", logged at ERROR during a PostgreSQL crash."""

from __future__ import annotations

import pytest

from app.resources import create_pool
from app.store.events import EventStore


async def test_a_wake_up_that_cannot_be_sent_is_logged_not_raised(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = EventStore(pool, notify=True)
    await pool.close()  # what a notification meets is no connection at all
    store._notify_position = 7  # as an append leaves it for the sender
    await store._send_notifications()  # the body of the sender task
    assert "could not notify subscribers of position 7" in caplog.text
