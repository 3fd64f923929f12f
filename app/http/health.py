"""Liveness and readiness (the scorer process has a readiness of its own)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException

from app.http.problems import RETRY_AFTER_SECONDS, never_answers, problem_response
from app.http.schemas import DatabaseRole, Health, Readiness
from app.outages import DATABASE, REDIS, unavailable_store
from app.services.probes import Probes

_log = logging.getLogger("model_ledger.http")

_READY_TIMEOUT = 2.0


@get(
    "/health",
    operation_id="health",
    tags=["operations"],
    sync_to_thread=False,
    opt=never_answers(503),
)
def health() -> Health:
    """The process is alive."""
    return Health(status="ok")


async def head_if_answering(
    probes: Probes, *also: tuple[str, Callable[[], Awaitable[object]]]
) -> int:
    """The log's head position once the database (and each named probe of `also`) answered
    in time, else 503 naming the store in plain words; the error itself goes to the log."""
    store = DATABASE
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            head = await probes.head()
            for store, probe in also:  # noqa: B007 - `store` names the probe that failed
                await probe()
    except Exception as error:
        # an outage is expected and logged without a traceback; anything else is a bug
        outage = isinstance(error, TimeoutError) or unavailable_store(error) is not None
        _log.warning("not ready: %s: %r", store, error, exc_info=None if outage else error)
        raise ServiceUnavailableException(
            f"not ready: {store} does not answer",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            extra={"code": "store_unavailable"},
        ) from error
    return head


class HealthController(Controller):
    """Readiness; no authentication."""

    tags = ["operations"]

    @get(
        "/ready",
        operation_id="ready",
        responses={503: problem_response("a store does not answer")},
    )
    async def ready(self, probes: NamedDependency[Probes]) -> Readiness:
        """The database and Redis answer; `database_role`: could the server alter the log?"""
        # inspected at startup; again here (under the timeout) if that failed
        head = await head_if_answering(probes, (REDIS, probes.redis), (DATABASE, probes.role))
        role = await probes.role()
        return Readiness(
            status="ok",
            database="ok",
            redis="ok",
            head_position=head,
            database_role=DatabaseRole(
                name=role.name, least_privilege=role.least_privilege, problems=role.problems
            ),
        )
