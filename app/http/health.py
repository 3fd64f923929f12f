"""Liveness and readiness (the scorer process has a readiness of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException

from app.http.problems import problem_response
from app.http.schemas import DatabaseRole, Health, Readiness
from app.resources import Resources

_READY_TIMEOUT = 2.0


@get("/health", operation_id="health", tags=["operations"], sync_to_thread=False)
def health() -> Health:
    """The process is alive."""
    return Health(status="ok")


async def head_if_answering(resources: Resources, *also: Callable[[], Awaitable[object]]) -> int:
    """The log's head position once the database (and `also`) answered in time, else 503."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            head, _ = await resources.store.head()
            for probe in also:
                await probe()
    except Exception as error:
        raise ServiceUnavailableException(f"not ready: {type(error).__name__}: {error}") from error
    return head


class HealthController(Controller):
    """Readiness; no authentication."""

    tags = ["operations"]

    @get(
        "/ready",
        operation_id="ready",
        responses={503: problem_response("a store does not answer")},
    )
    async def ready(self, state: State) -> Readiness:
        """The database and Redis answer; `database_role`: could the server alter the log?"""
        resources: Resources = state.resources
        roles = resources.database_role
        # inspected at startup; again here (under the timeout) if that failed
        head = await head_if_answering(resources, resources.redis.ping, roles.report)
        role = await roles.report()
        return Readiness(
            status="ok",
            database="ok",
            redis="ok",
            head_position=head,
            database_role=DatabaseRole(
                name=role.name, least_privilege=role.least_privilege, problems=role.problems
            ),
        )
