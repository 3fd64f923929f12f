"""The jobs view: each job's request, attempts and outcome.

A page of job events is folded in memory over the rows it touches (read once), then
written back in two statements (COPY for new rows, one upsert for the others): a rebuild
writes each job once per page, not once per event.
The fold is what row-by-row statements would leave: a second request of a job changes
nothing, events of a job never requested are ignored, and a late `started` of a retry
never reopens a finished job. A requeued job is `requested` again, the reason in `error`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from app.store.codec import RecordedEvent
from domain import events as ev

# the table's columns and their types, in row order
_COLUMNS = {
    "job_id": "text",
    "kind": "text",
    "name": "text",
    "version": "int",
    "params": "json",
    "status": "text",
    "attempts": "int",
    "requested_position": "bigint",
    "requested_at": "timestamptz",
    "requested_by": "text",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "result": "json",
    "error": "text",
    "details": "json",
    "position": "bigint",
}
_SELECT = (
    "SELECT "  # noqa: S608 - fixed columns
    + ", ".join(f"{c}::text" if kind == "json" else c for c, kind in _COLUMNS.items())
    + " FROM jobs WHERE job_id = ANY($1)"
)
_UPSERT = (
    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) SELECT * FROM unnest("  # noqa: S608 - fixed
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_COLUMNS.values(), start=1))
    + ") ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in list(_COLUMNS)[5:])
)
_INDEX = {column: i for i, column in enumerate(_COLUMNS)}
STATUS, ATTEMPTS, STARTED_AT, FINISHED_AT, RESULT, ERROR, DETAILS, POSITION = (
    _INDEX[c]
    for c in (
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "result",
        "error",
        "details",
        "position",
    )
)
_FINISHED = ("succeeded", "failed")


_JOB_EVENTS = (ev.JobRequested, ev.JobStarted, ev.JobSucceeded, ev.JobFailed, ev.JobRequeued)


def _job_id(recorded: RecordedEvent) -> str:
    event = recorded.event
    assert isinstance(event, _JOB_EVENTS)  # the projection reads only job events
    return event.job_id


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def fold(row: list[Any] | None, recorded: RecordedEvent) -> list[Any] | None:
    """A job's row (columns in `_COLUMNS` order) after one of its events."""
    event, at, position = recorded.event, recorded.recorded_at, recorded.position
    if isinstance(event, ev.JobRequested):
        if row is not None:
            return row
        # in `_COLUMNS` order
        return [
            event.job_id,
            event.kind,
            event.name,
            event.version,
            _json(event.params),
            "requested",
            0,  # attempts
            position,  # requested_position
            at,
            recorded.meta.actor,
            None,  # started_at
            None,  # finished_at
            None,  # result
            None,  # error
            None,  # details
            position,
        ]
    if row is None:
        return None
    assert isinstance(event, (ev.JobStarted, ev.JobSucceeded, ev.JobFailed, ev.JobRequeued))
    if isinstance(event, ev.JobRequeued):
        _requeued(row, event, recorded.meta.actor)
        row[POSITION] = position
        return row
    if isinstance(event, ev.JobStarted):
        row[STATUS] = row[STATUS] if row[STATUS] in _FINISHED else "running"
        row[STARTED_AT] = row[STARTED_AT] or at
    elif isinstance(event, ev.JobSucceeded):
        row[STATUS], row[RESULT], row[ERROR], row[FINISHED_AT] = (
            "succeeded",
            _json(event.result),
            None,
            at,
        )
    elif isinstance(event, ev.JobFailed):
        if event.final:
            row[STATUS], row[FINISHED_AT] = "failed", at
        row[ERROR], row[DETAILS] = event.error, _json(event.details)
    row[ATTEMPTS] = max(row[ATTEMPTS], event.attempt)
    row[POSITION] = position
    return row


def _requeued(row: list[Any], event: ev.JobRequeued, actor: str) -> None:
    # waiting for a worker again; the reason stays visible until an outcome replaces it
    if row[STATUS] in _FINISHED:
        return
    row[STATUS], row[ERROR] = "requested", f"requeued: {event.reason}"
    row[DETAILS] = _json({"requeued_by": actor, "requeues": event.requeues})


class JobsProjection:
    """Projects job.requested / started / succeeded / failed into the `jobs` table."""

    name = "jobs"
    types = ("job.requested", "job.started", "job.succeeded", "job.failed", "job.requeued")
    tables = ("jobs",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold the page's events over the rows of their jobs; write the changed rows."""
        ids = list({_job_id(recorded) for recorded in events})
        rows: dict[str, list[Any]] = {r[0]: list(r) for r in await conn.fetch(_SELECT, ids)}
        stored = set(rows)
        changed: set[str] = set()
        for recorded in events:
            job_id = _job_id(recorded)
            row = fold(rows.get(job_id), recorded)
            if row is not None:
                rows[job_id] = row
                changed.add(job_id)
        # new rows are copied in (a rebuild's are nearly all new); rows that were
        # stored already are updated in one upsert
        new = [tuple(rows[j]) for j in sorted(changed - stored)]
        if new:
            await conn.copy_records_to_table("jobs", records=new, columns=list(_COLUMNS))
        if updated := sorted(changed & stored):
            columns: list[list[Any]] = [[] for _ in _COLUMNS]
            for job_id in updated:
                for column, value in zip(columns, rows[job_id], strict=True):
                    column.append(value)
            await conn.execute(_UPSERT, *columns)
