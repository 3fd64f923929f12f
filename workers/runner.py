"""Running one attempt of a job: record the start, compute, record the outcome exactly once.

A job's outcome is appended under event ids derived from its job id (`domain.jobs.result_ids`),
so a second attempt (a worker killed after appending, a duplicate delivery) finds it recorded
and stops. Errors the job cannot fix by retrying (a domain rule, bad input) end the job at
once; anything else (a lost connection, a crashed child process, a timeout) is retried with
backoff until `job_max_tries`, each failed attempt recorded with its error.
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
from domain import events as ev
from domain import jobs
from domain.errors import DomainError
from domain.events import Event
from domain.state import ModelState
from workers.pool import ProcessPool

_log = logging.getLogger("model_ledger.jobs")

# what a kind's computation hands back: the decider of its outcome, given the seconds it took
Decider = Callable[[ModelState | None, float], list[Event]]


class JobInputError(Exception):
    """The job's inputs cannot work (a missing column, an unreadable dataset): no retry helps."""


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a kind's computation gets."""

    resources: Resources
    pool: ProcessPool
    job: ev.JobRequested
    meta: ev.EventMeta
    attempt: int


Kind = Callable[[Context], Awaitable[Decider]]
# after the outcome: follow-ups caused by it (a drift alert's rollback); idempotent
FollowUp = Callable[[Context, RequestedJob], Awaitable[None]]


def backoff_seconds(attempt: int) -> float:
    """Wait before the next attempt: 2, 4, 8 ... seconds, at most five minutes."""
    return float(min(2**attempt, 300))


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

    async def run(self, job_id: str, position: int, attempt: int) -> str:
        """One attempt at the job requested at `position`; returns what happened."""
        requested = await self._res.jobs.requested(job_id, position)
        job = requested.request
        ctx = Context(
            resources=self._res,
            pool=self._pool,
            job=job,
            meta=_on_behalf(requested),
            attempt=attempt,
        )
        if await self._res.jobs.finished(job_id):
            await self._follow_up(ctx, requested)
            return "already recorded"
        max_tries = self._res.settings.job_max_tries
        if attempt > max_tries:
            error = f"gave up after {max_tries} attempts: the worker running it was lost"
            await self._record(
                ctx, "result", lambda _s: jobs.failed(job, max_tries, error, final=True)
            )
            return "gave up"
        await self._record(
            ctx, f"attempt-{attempt}-started", lambda _s: jobs.started(job, attempt, self._worker)
        )
        outcome = await self._attempt(ctx, max_tries)
        await self._follow_up(ctx, requested)
        return outcome

    async def _attempt(self, ctx: Context, max_tries: int) -> str:
        job, attempt = ctx.job, ctx.attempt
        start = time.perf_counter()
        try:
            decider = await self._kind(job.kind)(ctx)
            seconds = round(time.perf_counter() - start, 3)
            await self._record(ctx, "result", lambda state: decider(state, seconds))
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
        job, attempt = ctx.job, ctx.attempt
        purpose = "result" if final else f"attempt-{attempt}-failed"
        await self._record(ctx, purpose, lambda _s: jobs.failed(job, attempt, error, final=final))

    async def _follow_up(self, ctx: Context, requested: RequestedJob) -> None:
        follow_up = self._follow_ups.get(ctx.job.kind)
        if follow_up is not None:
            await follow_up(ctx, requested)

    async def _record(
        self, ctx: Context, purpose: str, decider: Callable[[ModelState | None], list[Event]]
    ) -> None:
        job_id = ctx.job.job_id
        await self._res.governance.record(
            ctx.job.name,
            decider,
            ctx.meta,
            event_ids=lambda count: jobs.result_ids(job_id, purpose, count),
        )


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
    return await runner.run(job_id, position, ctx["job_try"])
