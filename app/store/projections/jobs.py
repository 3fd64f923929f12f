"""The jobs view: each job's request, attempts and outcome."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from app.store.codec import RecordedEvent
from domain import events as ev

_REQUESTED = (
    "INSERT INTO jobs (job_id, kind, name, version, params, status, attempts, "
    "requested_position, requested_at, requested_by, position) "
    "VALUES ($1, $2, $3, $4, $5, 'requested', 0, $6, $7, $8, $6) ON CONFLICT (job_id) DO NOTHING"
)
# a late `started` of a retry never reopens a finished job
_STARTED = (
    "UPDATE jobs SET status = CASE WHEN status IN ('succeeded', 'failed') THEN status "
    "ELSE 'running' END, attempts = GREATEST(attempts, $2), "
    "started_at = COALESCE(started_at, $3), position = $4 WHERE job_id = $1"
)
_SUCCEEDED = (
    "UPDATE jobs SET status = 'succeeded', result = $2, error = NULL, finished_at = $3, "
    "attempts = GREATEST(attempts, $4), position = $5 WHERE job_id = $1"
)
_FAILED = (
    "UPDATE jobs SET status = CASE WHEN $2 THEN 'failed' ELSE status END, error = $3, "
    "details = $4, finished_at = CASE WHEN $2 THEN $5 ELSE finished_at END, "
    "attempts = GREATEST(attempts, $6), position = $7 WHERE job_id = $1"
)


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class JobsProjection:
    """Projects job.requested / started / succeeded / failed into the `jobs` table."""

    name = "jobs"
    types = ("job.requested", "job.started", "job.succeeded", "job.failed")
    tables = ("jobs",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply job events in order (few per batch: jobs are rare next to other events)."""
        # requests are sent pipelined (executemany), in order, before any later event
        requested: list[tuple[object, ...]] = []
        for recorded in events:
            event, at, position = recorded.event, recorded.recorded_at, recorded.position
            if isinstance(event, ev.JobRequested):
                requested.append(
                    (
                        event.job_id,
                        event.kind,
                        event.name,
                        event.version,
                        _json(event.params),
                        position,
                        at,
                        recorded.meta.actor,
                    )
                )
                continue
            if requested:
                await conn.executemany(_REQUESTED, requested)
                requested.clear()
            if isinstance(event, ev.JobStarted):
                await conn.execute(_STARTED, event.job_id, event.attempt, at, position)
            elif isinstance(event, ev.JobSucceeded):
                result = _json(event.result)
                await conn.execute(_SUCCEEDED, event.job_id, result, at, event.attempt, position)
            elif isinstance(event, ev.JobFailed):
                await conn.execute(
                    _FAILED,
                    event.job_id,
                    event.final,
                    event.error,
                    _json(event.details),
                    at,
                    event.attempt,
                    position,
                )
        if requested:
            await conn.executemany(_REQUESTED, requested)
