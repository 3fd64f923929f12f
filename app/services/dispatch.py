"""The dispatcher: relays `job.requested` (and `job.requeued`) events from the log to arq.

The log is the queue of record. The dispatcher keeps its position in `projection_checkpoints`
and moves it only after arq accepted every request up to there, so a request made while Redis
is down waits in the log and is relayed once Redis is back. The arq job id is the request's job
id, so relaying twice (a crash between enqueue and checkpoint) enqueues once; and a job whose
outcome is already in the log does nothing if it runs again (see workers/runner.py). A job the
sweeper requeued is relayed the same way, once arq's memory of an earlier run is cleared.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.outages import DATABASE, REDIS, report_failure, unavailable_store
from app.settings import Settings
from app.store.events import EventStore
from app.store.projector import lock_checkpoint

RUN_JOB = "run_job"
CHECKPOINT = "dispatcher"
# the events that ask the dispatcher for something (its wake-ups follow these alone)
JOB_REQUESTS = ("job.requested", "job.requeued")
_PAGE = 500
# a request no worker starts within this is dropped by arq; the log still holds it
_EXPIRES = timedelta(days=7)
# while Redis is away the dispatcher retries this often at most: it relays within about
# this long of Redis coming back (a refused connection costs next to nothing)
_MAX_BACKOFF_SECONDS = 1.0
# arq keeps a job claimed this long past its timeout (`in_progress_timeout_s`)
ARQ_CLAIM_MARGIN_SECONDS = 10.0

_log = logging.getLogger("model_ledger.dispatch")

# whether a request follows the checkpoint: one probe of the (type, position) index, however
# far behind the checkpoint is (it moves only when something was relayed)
_ANY_REQUEST = (
    "SELECT EXISTS (SELECT 1 FROM events WHERE type IN ('job.requested', 'job.requeued') "
    "AND position > coalesce((SELECT position FROM projection_checkpoints WHERE name = $1), 0))"
)


class _Relayed(msgspec.Struct):
    job_id: str
    requested_position: int | None = None


_decode_job = msgspec.json.Decoder(_Relayed).decode


def arq_job_timeout(settings: Settings) -> float:
    """arq's limit on one run: past the runner's own timeout, so that one fires first."""
    return settings.job_timeout_seconds + max(5.0, settings.job_timeout_seconds / 10)


# probes after 10 s of silence, every 5 s; 3 unanswered probes close the connection (each
# option where the platform has it: Linux has all three)
_PROBES = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
_KEEPALIVE: dict[str, Any] = {
    "socket_keepalive": True,
    "socket_keepalive_options": {
        getattr(socket, name): value for name, value in _PROBES.items() if hasattr(socket, name)
    },
}


def queue_connection(redis_url: str, queue_name: str) -> ArqRedis:
    """A Redis client for the queue that outlives Redis restarts.

    It connects on first use (a Redis that is down must not stop a process: jobs wait in the
    log). A dead connection is replaced on the next command; a command that meets a refused or
    reset connection is retried a few times with backoff; a peer that vanished without closing
    (a half-open TCP connection) is found by the kernel's keepalive probes within about 25 s,
    and its reads fail; idle connections are checked before reuse.

    No `socket_timeout`: with one, redis-py 5 sends each command under `asyncio.wait_for`,
    which on Python 3.11 swallows a cancellation that arrives as the send completes. A task
    stopped then ran on (a sweeper outlived its worker's shutdown, which waited for it).
    """
    # TCP only: a unix socket (the embedded Redis) has no keepalive, and no half-open peers
    tcp = {} if redis_url.startswith("unix:") else _KEEPALIVE
    pool = ConnectionPool.from_url(
        redis_url,
        socket_connect_timeout=2.0,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        **tcp,
    )
    return ArqRedis(connection_pool=pool, default_queue_name=queue_name)


class Dispatcher:
    """Relays job requests after its checkpoint to the arq queue."""

    def __init__(self, store: EventStore, redis: ArqRedis, queue_name: str) -> None:
        self._store = store
        self._redis = redis
        self._queue_name = queue_name

    async def relay(self) -> int:
        """Enqueue every request not yet relayed; returns how many were. Raises if Redis is down."""
        if not await self._store.pool.fetchval(_ANY_REQUEST, CHECKPOINT):
            return 0  # most appends request no job: no lock taken, nothing written
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
                    "AND type IN ('job.requested', 'job.requeued') ORDER BY position LIMIT $3",
                    checkpoint,
                    head,
                    _PAGE,
                )
                for row in rows:
                    await self._enqueue(_decode_job(row["data"]), row["position"])
                relayed += len(rows)
                reached = head if len(rows) < _PAGE else rows[-1]["position"]
                await conn.execute(
                    "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                    CHECKPOINT,
                    reached,
                )

    async def _enqueue(self, relayed: _Relayed, position: int) -> None:
        job_id = relayed.job_id
        if relayed.requested_position is not None:  # a requeue
            position = relayed.requested_position
            # arq refuses an id whose result it keeps (keep_result): a requeued job's earlier
            # run ended without an outcome in the log, so that result is stale; an entry
            # still queued or running is left alone (arq runs it)
            if not await self._redis.exists(job_key_prefix + job_id):
                await self._redis.delete(result_key_prefix + job_id)
        enqueued = await self._redis.enqueue_job(
            RUN_JOB,
            job_id,
            position,
            _job_id=job_id,
            _queue_name=self._queue_name,
            _expires=_EXPIRES,
        )
        # None is "arq knows this id already", but also what arq answers when the connection
        # died between its WATCH and EXEC: the checkpoint must not pass a job arq never got
        if enqueued is None and not await self._redis.exists(
            job_key_prefix + job_id, result_key_prefix + job_id
        ):
            raise RedisConnectionError(f"job {job_id} was not enqueued: Redis went away")

    async def run(self, wait: Callable[[float], Awaitable[None]]) -> None:
        """Relay each time `wait(seconds)` returns (the log grew); back off while Redis is down."""
        backoff = 0.25
        away: str | None = None
        while True:
            try:
                await self.relay()
                if away:
                    _log.warning("job dispatch resumed: %s answers again", away)
                backoff, away = 0.25, None
                timeout = 5.0
            except (RedisError, OSError) as error:
                if not away:
                    # a database that cannot be connected to raises an OSError too
                    away = DATABASE if unavailable_store(error) == DATABASE else REDIS
                    _log.warning("job dispatch waits for %s (%s)", away, error)
                timeout = backoff
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            except Exception as error:  # the database away, or a bug
                report_failure(_log, "job dispatch", error)
                timeout = 5.0
            await wait(timeout)
