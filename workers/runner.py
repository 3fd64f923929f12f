"""Running one attempt of a job: record the start, compute, record the outcome exactly once.

A job's computation hands back a plain outcome (`domain.commands.JobOutcome`); the runner
turns it, like the attempt's start and failures, into a command handled by the one command
path (`app.services.commands`). Its events get ids fixed by the job (`domain.jobs.outcome_ids`),
so a second attempt (a worker killed after appending, a duplicate delivery) finds it recorded
and stops. Attempts are counted in the log, not by arq: a delivery is attempt n + 1 when n
attempts started, however often Redis lost or repeated it. Errors the job cannot fix by
retrying (a domain rule, bad input) end the job at once; anything else (a lost connection, a
crashed child process, a timeout) is retried with backoff until `job_max_tries`, each failed
attempt recorded with its error. A concurrency conflict on the model's stream is neither: the
append is tried again on the fresh stream (re-read, re-decide). Whatever escapes all that (the
database away) makes arq run the job again later; the sweeper (app/services/sweeper.py) ends
the ones arq drops.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import msgspec
from arq import Retry

from app.resources import Resources
from app.services.jobs import RequestedJob
from domain import commands as cmd
from domain import events as ev
from domain.errors import ConcurrencyConflict, DomainError, NotFound
from domain.sweep import backoff_seconds, progress
from workers.metrics import observe_attempt
from workers.pool import ProcessPool

_log = logging.getLogger("model_ledger.jobs")


class JobInputError(Exception):
    """The job's inputs cannot work (a missing column, an unreadable dataset): no retry helps."""


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a kind's computation gets."""

    resources: Resources
    pool: ProcessPool
    job: ev.JobRequested
    meta: ev.EventMeta
    attempt: int


Kind = Callable[[Context], Awaitable[cmd.JobOutcome]]
# after the outcome: follow-ups caused by it (a drift alert's rollback); idempotent
FollowUp = Callable[[Context], Awaitable[None]]


# conflicts mean other appends to the stream succeed; past this long of them, arq retries
_CONFLICT_PATIENCE_SECONDS = 120.0


class JobRunner:
    """Runs job attempts for a worker process."""

    def __init__(
        self,
        resources: Resources,
        pool: ProcessPool,
        kinds: dict[str, Kind],
        follow_ups: dict[str, FollowUp] | None = None,
    ) -> None:
        self._res = resources
        self._pool = pool
        self._kinds = kinds
        self._follow_ups = follow_ups or {}
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, job_id: str, position: int) -> str:
        """One attempt at the job requested at `position`; returns what happened."""
        requested = await self._res.jobs.requested(job_id, position)
        job = requested.request
        history, _ = await self._res.jobs.history(job.name, job_id, position)
        standing = progress(history)
        attempt = standing.attempts + 1
        ctx = Context(
            resources=self._res,
            pool=self._pool,
            job=job,
            meta=_on_behalf(requested),
            attempt=attempt,
        )
        if standing.finished:
            await self._follow_up(ctx)
            return "already recorded"
        max_tries = self._res.settings.job_max_tries
        if attempt > max_tries:
            error = f"gave up after {max_tries} attempts: the worker running it was lost"
            await self._record(
                cmd.FailAttempt(job=job, attempt=max_tries, error=error, final=True), ctx.meta
            )
            return "gave up"
        start = cmd.StartAttempt(job=job, attempt=attempt, worker=self._worker)
        await self._record(start, ctx.meta)
        outcome = await self._attempt(ctx, max_tries)
        await self._follow_up(ctx)
        return outcome

    async def _attempt(self, ctx: Context, max_tries: int) -> str:
        start = time.perf_counter()
        outcome = "retried"
        try:
            outcome = await self._outcome(ctx, max_tries)
        finally:
            observe_attempt(ctx.job.kind, outcome, time.perf_counter() - start)
        return outcome

    async def _outcome(self, ctx: Context, max_tries: int) -> str:
        job, attempt = ctx.job, ctx.attempt
        start = time.perf_counter()
        try:
            outcome = await self._kind(job.kind)(ctx)
            seconds = round(time.perf_counter() - start, 3)
            await self._record(
                cmd.RecordJobOutcome(job=job, attempt=attempt, seconds=seconds, outcome=outcome),
                ctx.meta,
            )
        except ConcurrencyConflict:
            raise  # not the job's fault: it runs again (see run_job)
        except (DomainError, JobInputError) as error:
            await self._fail(ctx, _describe(error), final=True)
            return "failed"
        except Exception as error:  # anything else may pass on a later attempt
            _log.warning("job %s attempt %d failed: %s", job.job_id, attempt, _describe(error))
            final = attempt >= max_tries
            await self._fail(ctx, _describe(error), final=final)
            if final:
                return "failed"
            raise Retry(defer=backoff_seconds(attempt)) from error
        return "succeeded"

    def _kind(self, name: str) -> Kind:
        kind = self._kinds.get(name)
        if kind is None:
            raise JobInputError(f"this worker cannot run {name} jobs")
        return kind

    async def _fail(self, ctx: Context, error: str, *, final: bool) -> None:
        await self._record(
            cmd.FailAttempt(job=ctx.job, attempt=ctx.attempt, error=error, final=final), ctx.meta
        )

    async def _follow_up(self, ctx: Context) -> None:
        follow_up = self._follow_ups.get(ctx.job.kind)
        if follow_up is not None:
            await follow_up(ctx)

    async def _record(self, command: cmd.Command, meta: ev.EventMeta) -> None:
        """Append what the job decided, re-deciding on the fresh stream after a conflict."""
        await self._res.governance.handle(command, meta, patience=_CONFLICT_PATIENCE_SECONDS)


def _on_behalf(requested: RequestedJob) -> ev.EventMeta:
    """A job's events are attributed to whoever requested it, caused by the request."""
    cause = str(requested.event_id)
    return ev.EventMeta(
        actor=requested.meta.actor,
        role=requested.meta.role,
        correlation_id=requested.meta.correlation_id or cause,
        causation_id=cause,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, BrokenProcessPool):
        return "the process running the job died"
    detail = getattr(error, "detail", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {detail}"[:2000]


async def run_job(ctx: dict[str, Any], job_id: str, position: int) -> str:
    """arq entry point of every job kind (the dispatcher enqueues this with the job's id)."""
    runner: JobRunner = ctx["runner"]
    try:
        return await runner.run(job_id, position)
    except Retry:
        raise
    except NotFound as error:  # nothing to run nor to record against: the request is not there
        _log.error("job %s: %s", job_id, error.detail)
        return "no such request"
    except Exception as error:
        # not an outcome of the job (the database away, conflicts without end): arq runs it
        # again, and the next attempt is numbered from the log
        defer = backoff_seconds(ctx["job_try"])
        _log.warning("job %s runs again in %.0fs: %s", job_id, defer, _describe(error))
        raise Retry(defer=defer) from error
