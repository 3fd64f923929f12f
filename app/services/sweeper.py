"""The sweeper: no job stays `requested` or `running` forever.

Every process that dispatches jobs runs one; a pass is taken by one of them at a time (it
holds the `sweeper` row of `projection_checkpoints`, the others skip theirs). A pass reads the
unfinished jobs from the jobs view and what Redis holds for them, then judges each suspect on
its events in the log (`domain.sweep`): a job whose queue entry Redis lost, one no worker
started while none is alive, or an attempt with no outcome long past its timeout is requeued
(`job.requeued`, which the dispatcher relays again) or, past the bounds, failed with a reason.
Each decision is appended with the model stream's version it was taken on and an id fixed by
that state, so it is recorded once however many sweepers reach it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from arq.constants import health_check_key_suffix, job_key_prefix
from redis.exceptions import RedisError

from app.services.dispatch import ARQ_CLAIM_MARGIN_SECONDS, CHECKPOINT, arq_job_timeout
from app.services.jobs import Jobs
from app.settings import Settings
from app.store.events import EventStore
from app.store.projector import Projector
from domain import events as ev
from domain.decide import model_stream
from domain.errors import ConcurrencyConflict
from domain.sweep import Deadlines, QueueView, decision_ids, progress, sweep

ACTOR = "system:sweeper"
_LOCK = "sweeper"
# a decision meets a conflict only when the model's stream moved: re-read and decide again
_CONFLICT_RETRIES = 20

_log = logging.getLogger("model_ledger.sweeper")

_UNFINISHED = (
    "SELECT j.job_id, j.name, j.requested_position, e.recorded_at AS last_at "
    "FROM jobs j JOIN events e ON e.position = j.position "
    "WHERE j.status IN ('requested', 'running') ORDER BY j.requested_position"
)


def deadlines(settings: Settings) -> Deadlines:
    """The sweeper's bounds, from settings: an attempt is overdue once arq itself gave up on
    it (its timeout and claim) and the grace passed too."""
    run = arq_job_timeout(settings) + ARQ_CLAIM_MARGIN_SECONDS + settings.job_run_grace_seconds
    return Deadlines(
        start_seconds=settings.job_start_deadline_seconds,
        run_seconds=run,
        max_tries=settings.job_max_tries,
        max_requeues=settings.job_max_requeues,
    )


class Sweeper:
    """Requeues or fails stalled jobs, visibly, as `system:sweeper`."""

    def __init__(
        self,
        store: EventStore,
        jobs: Jobs,
        projector: Projector,
        redis: ArqRedis,
        settings: Settings,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._projector = projector
        self._redis = redis
        self._settings = settings
        self._deadlines = deadlines(settings)

    async def sweep(self) -> int:
        """One pass; returns the decisions recorded (0 too when another sweeper has the turn)."""
        async with self._store.pool.acquire() as conn, conn.transaction():
            if not await _take_turn(conn):
                return 0
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            # read before Redis: a job relayed after this is judged on the next pass
            relayed_upto = await conn.fetchval(
                "SELECT coalesce(max(position), 0) FROM projection_checkpoints WHERE name = $1",
                CHECKPOINT,
            )
            unfinished = await conn.fetch(_UNFINISHED)
            views = await self._queue_views([row["job_id"] for row in unfinished])
            decided = 0
            for row in unfinished:
                view = None if views is None else views[row["job_id"]]
                if self._suspect(row, view, now):
                    decided += await self.settle(
                        row["name"],
                        row["job_id"],
                        row["requested_position"],
                        queue=view,
                        relayed_upto=relayed_upto,
                        now=now,
                    )
            return decided

    def _suspect(self, row: asyncpg.Record, view: QueueView | None, now: datetime) -> bool:
        """Worth reading the job's events: the only jobs `domain.sweep` could act on."""
        idle: float = (now - row["last_at"]).total_seconds()
        limits = self._deadlines
        if view is None:
            return idle > limits.run_seconds
        return (
            not view.holds_job
            or idle > limits.run_seconds
            or (not view.workers_alive and idle > limits.start_seconds)
        )

    async def settle(
        self,
        name: str,
        job_id: str,
        position: int,
        *,
        queue: QueueView | None,
        relayed_upto: int,
        now: datetime,
    ) -> int:
        """Judge one job on its events now; 1 when a decision was recorded (or found recorded)."""
        for _ in range(_CONFLICT_RETRIES):
            history, version = await self._jobs.history(name, job_id, position)
            job = progress(history)
            relayed = job.last_position <= relayed_upto
            events = sweep(job, now=now, deadlines=self._deadlines, relayed=relayed, queue=queue)
            if not events:
                return 0
            try:
                result = await self._store.append(
                    model_stream(name),
                    events,
                    meta=await self._meta(job_id, position),
                    expected_version=version,
                    event_ids=decision_ids(job, events),
                )
            except ConcurrencyConflict:
                continue
            if not result.replayed:
                _log.warning("job %s: %s", job_id, _summary(events[0]))
            await self._projector.catch_up_to(result.last_position)
            return 1
        return 0  # the stream kept moving: the next pass judges it again

    async def _meta(self, job_id: str, position: int) -> ev.EventMeta:
        requested = await self._jobs.requested(job_id, position)
        cause = str(requested.event_id)
        return ev.EventMeta(
            actor=ACTOR,
            role="admin",
            correlation_id=requested.meta.correlation_id or cause,
            causation_id=cause,
        )

    async def _queue_views(self, job_ids: list[str]) -> dict[str, QueueView] | None:
        """What Redis holds for each job, or None when Redis cannot be read now."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self._settings.queue_name + health_check_key_suffix)
                for job_id in job_ids:
                    pipe.exists(job_key_prefix + job_id)
                alive, *held = await pipe.execute()
        except (RedisError, OSError):
            return None
        return {
            job_id: QueueView(holds_job=bool(found), workers_alive=bool(alive))
            for job_id, found in zip(job_ids, held, strict=True)
        }

    async def run(self, wake: Callable[[float], Any] = asyncio.sleep) -> None:
        """Sweep every `job_sweep_interval_seconds`, logging (not dying on) failures."""
        interval = self._settings.job_sweep_interval_seconds
        while True:
            await wake(interval)
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                _log.warning("job sweep skipped: %s", error)
            except Exception:
                _log.exception("job sweep failed")


async def _take_turn(conn: asyncpg.Connection) -> bool:
    """Hold the sweeper's row until the transaction ends, unless another sweeper holds it."""
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) "
        "ON CONFLICT (name) DO NOTHING",
        _LOCK,
    )
    held: bool | None = await conn.fetchval(
        "SELECT true FROM projection_checkpoints WHERE name = $1 FOR UPDATE SKIP LOCKED", _LOCK
    )
    return held is True


def _summary(event: ev.Event) -> str:
    if isinstance(event, ev.JobRequeued):
        return f"requeued ({event.reason})"
    if isinstance(event, ev.JobFailed):
        return f"failed ({event.error})"
    return type(event).__name__
