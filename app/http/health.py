"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException

from app.http.problems import problem_response
from app.http.schemas import Health, Readiness
from app.resources import Resources

_READY_TIMEOUT = 2.0


class HealthController(Controller):
    """Operational probes; no authentication."""

    tags = ["operations"]

    @get("/health", operation_id="health", sync_to_thread=False)
    def health(self) -> Health:
        """The process is alive."""
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="ready",
        responses={503: problem_response("a store does not answer")},
    )
    async def ready(self, state: State) -> Readiness:
        """The database and Redis answer."""
        resources: Resources = state.resources
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                head, _ = await resources.store.head()
                await resources.redis.ping()
        except Exception as error:
            raise ServiceUnavailableException(
                f"not ready: {type(error).__name__}: {error}"
            ) from error
        return Readiness(status="ok", database="ok", redis="ok", head_position=head)
