"""The dispatcher: relays `job.requested` events from the log to arq.

The log is the queue of record. The dispatcher keeps its position in `projection_checkpoints`
and moves it only after arq accepted every request up to there, so a request made while Redis
is down waits in the log and is relayed once Redis is back. The arq job id is the request's job
id, so relaying twice (a crash between enqueue and checkpoint) enqueues once; and a job whose
outcome is already in the log does nothing if it runs again (see workers/runner.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import msgspec
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.store.events import EventStore
from app.store.projector import lock_checkpoint

RUN_JOB = "run_job"
CHECKPOINT = "dispatcher"
_PAGE = 500
# a request no worker starts within this is dropped by arq; the log still holds it
_EXPIRES = timedelta(days=7)
_MAX_BACKOFF_SECONDS = 30.0

_log = logging.getLogger("model_ledger.dispatch")


class _JobId(msgspec.Struct):
    job_id: str


_decode_job = msgspec.json.Decoder(_JobId).decode


class Dispatcher:
    """Relays job requests after its checkpoint to the arq queue."""

    def __init__(self, store: EventStore, redis: ArqRedis, queue_name: str) -> None:
        self._store = store
        self._redis = redis
        self._queue_name = queue_name

    async def relay(self) -> int:
        """Enqueue every request not yet relayed; returns how many were. Raises if Redis is down."""
        head, _ = await self._store.head()
        relayed = 0
        while True:
            async with self._store.pool.acquire() as conn, conn.transaction():
                # the checkpoint row stays locked while enqueuing: dispatchers in several
                # processes take turns instead of racing
                checkpoint = await lock_checkpoint(conn, CHECKPOINT)
                if checkpoint >= head:
                    return relayed
                rows = await conn.fetch(
                    "SELECT position, data FROM events WHERE position > $1 AND position <= $2 "
                    "AND type = 'job.requested' ORDER BY position LIMIT $3",
                    checkpoint,
                    head,
                    _PAGE,
                )
                for row in rows:
                    job_id = _decode_job(row["data"]).job_id
                    await self._redis.enqueue_job(
                        RUN_JOB,
                        job_id,
                        row["position"],
                        _job_id=job_id,
                        _queue_name=self._queue_name,
                        _expires=_EXPIRES,
                    )
                relayed += len(rows)
                reached = head if len(rows) < _PAGE else rows[-1]["position"]
                await conn.execute(
                    "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                    CHECKPOINT,
                    reached,
                )

    async def run(self, wait: Callable[[float], Awaitable[None]]) -> None:
        """Relay each time `wait(seconds)` returns (the log grew); back off while Redis is down."""
        backoff = 0.5
        while True:
            try:
                await self.relay()
                backoff = 0.5
                timeout = 5.0
            except (RedisError, OSError) as error:
                _log.warning("job dispatch waits for Redis (%s); retrying in %.1fs", error, backoff)
                timeout = backoff
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            except Exception:
                _log.exception("job dispatch failed")
                timeout = 5.0
            await wait(timeout)
