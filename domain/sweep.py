"""Where a job stands, folded from its events, and what the sweeper decides about a stalled one.

A job ends in exactly one outcome (`job.succeeded` or a final `job.failed`). Everything short
of that (a request no worker took, an attempt whose worker vanished, a queue entry Redis lost)
must lead either to another try or to a recorded failure: the sweeper requeues such a job
(`job.requeued`, relayed again by the dispatcher) or, past the bounds, fails it with a reason.
Time is an input: `now` and each event's recorded time.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import msgspec

from domain import events as ev
from domain.commands import FailAttempt
from domain.jobs import failed, result_ids


class JobEvent(msgspec.Struct, frozen=True):
    """One of a job's events as recorded: the event, when, and where in the log."""

    event: ev.Event
    at: datetime
    position: int


class JobProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A job's standing: finished, running an attempt, or waiting for a worker."""

    job: ev.JobRequested
    requested_position: int
    finished: bool
    # the highest attempt that started
    attempts: int
    # the latest attempt started and nothing ended it
    running: bool
    # running: when the latest attempt started; waiting: since when a worker could take it
    since: datetime
    # the job's latest event (a sweeper decision is taken on it)
    last_position: int
    # requeues since the job last started
    requeues: int


class Deadlines(msgspec.Struct, frozen=True, kw_only=True):
    """How long a job may wait for a worker and run an attempt, and the bounds on trying."""

    start_seconds: float
    run_seconds: float
    max_tries: int
    max_requeues: int


class QueueView(msgspec.Struct, frozen=True, kw_only=True):
    """What the queue (Redis) holds for a job, read just before deciding."""

    holds_job: bool
    workers_alive: bool


def backoff_seconds(attempt: int) -> float:
    """Wait before the attempt after a failed one: 2, 4, 8 ... seconds, at most five minutes."""
    return float(min(2**attempt, 300))


def progress(history: list[JobEvent]) -> JobProgress:
    """Fold a job's events, its request first, in log order."""
    first = history[0]
    assert isinstance(first.event, ev.JobRequested)
    finished, running, attempts, requeues = False, False, 0, 0
    since = first.at
    for seen in history[1:]:
        event = seen.event
        if isinstance(event, ev.JobSucceeded) or (isinstance(event, ev.JobFailed) and event.final):
            finished = True
        elif isinstance(event, ev.JobStarted) and event.attempt >= attempts:
            attempts, running, since, requeues = event.attempt, True, seen.at, 0
        elif isinstance(event, ev.JobFailed) and event.attempt >= attempts:
            # arq runs the next attempt after the runner's backoff
            running = False
            since = seen.at + timedelta(seconds=backoff_seconds(event.attempt))
        elif isinstance(event, ev.JobRequeued):
            running, since, requeues = False, seen.at, event.requeues
    return JobProgress(
        job=first.event,
        requested_position=first.position,
        finished=finished,
        attempts=attempts,
        running=running,
        since=since,
        last_position=history[-1].position,
        requeues=requeues,
    )


def sweep(
    job: JobProgress,
    *,
    now: datetime,
    deadlines: Deadlines,
    relayed: bool,
    queue: QueueView | None,
) -> list[ev.Event]:
    """Requeue or fail a stalled job; [] while it is finished, on time, or cannot be judged.

    `relayed`: the dispatcher has handed the job's latest request or requeue to the queue.
    `queue` None: the queue cannot be read now (Redis away), so only a running attempt past
    its deadline is judged.
    """
    if job.finished:
        return []
    if job.running:
        return _overdue_attempt(job, now, deadlines)
    if queue is None or not relayed:
        return []
    if not queue.holds_job:
        reason = "its queue entry was lost (Redis restarted empty or was flushed)"
    elif not queue.workers_alive and _seconds(now, job.since) > deadlines.start_seconds:
        reason = f"no worker started it within {deadlines.start_seconds:g} s"
    else:
        return []
    if job.requeues >= deadlines.max_requeues:
        return _failed(job, f"never started: {reason} (requeued {job.requeues} times)")
    return [_requeued(job, reason)]


def decision_ids(job: JobProgress, events: list[ev.Event]) -> list[uuid.UUID]:
    """Ids fixed by what was decided on: two sweepers deciding on one state record it once, and
    a failure takes the job's outcome id, so it and a late worker's outcome cannot both land."""
    purpose = "result" if job_ends(events) else f"requeue-after-{job.last_position}"
    return result_ids(job.job.job_id, purpose, len(events))


def job_ends(events: list[ev.Event]) -> bool:
    """True when the events close the job."""
    return any(isinstance(e, ev.JobFailed) and e.final for e in events)


def _overdue_attempt(job: JobProgress, now: datetime, deadlines: Deadlines) -> list[ev.Event]:
    if _seconds(now, job.since) <= deadlines.run_seconds:
        return []
    reason = (
        f"attempt {job.attempts} had no outcome {deadlines.run_seconds:g} s after it started "
        "(its worker was lost)"
    )
    if job.attempts >= deadlines.max_tries:
        return _failed(job, f"gave up after {job.attempts} attempts: {reason}")
    return [_requeued(job, reason)]


def _requeued(job: JobProgress, reason: str) -> ev.JobRequeued:
    return ev.JobRequeued(
        job_id=job.job.job_id,
        kind=job.job.kind,
        name=job.job.name,
        requested_position=job.requested_position,
        attempts=job.attempts,
        reason=reason,
        requeues=job.requeues + 1,
    )


def _failed(job: JobProgress, error: str) -> list[ev.Event]:
    details = {"requeues": job.requeues, "swept": True}
    return failed(
        FailAttempt(job=job.job, attempt=job.attempts, error=error, final=True, details=details)
    )


def _seconds(now: datetime, since: datetime) -> float:
    return (now - since).total_seconds()
