"""The queue's Redis client lets a task be stopped: a cancellation is never swallowed.

With a `socket_timeout`, redis-py 5 sends under `asyncio.wait_for`, which on Python 3.11 drops
a cancellation arriving as the send completes; a worker's sweeper then ran on after its
shutdown cancelled it, and the shutdown waited for it forever. Real Redis.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from app.services.dispatch import queue_connection

# without the fix a cancellation was lost within the first 25 tries (of 5 runs, the latest
# at try 23); 400 tries, at varied moments of a command, leave it no room
_TRIES = 400


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = queue_connection(redis_url, "cancellation-test")
    yield client
    await client.aclose(close_connection_pool=True)


async def _commands_forever(redis: ArqRedis) -> None:
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists("cancellation-test:a")
            pipe.exists("cancellation-test:b")
            await pipe.execute()
        await redis.exists("cancellation-test:c")


async def test_a_task_sending_commands_stops_when_cancelled(redis: ArqRedis) -> None:
    chance = random.Random(7)
    for attempt in range(_TRIES):
        task = asyncio.create_task(_commands_forever(redis))
        await asyncio.sleep(chance.uniform(0, 0.005))  # a varied moment of the command loop
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        assert done, f"try {attempt}: the cancelled task runs on"
        assert task.cancelled()
