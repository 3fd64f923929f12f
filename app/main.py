"""`create_app(settings)`: the Litestar application. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from app.http.audit import AuditController
from app.http.auth import PUBLIC_PATHS, BearerTokenMiddleware
from app.http.health import HealthController
from app.http.problems import EXCEPTION_HANDLERS
from app.http.tokens import TokenController
from app.resources import Resources, open_resources
from app.settings import Settings

_log = logging.getLogger("model_ledger")

API_VERSION = "1.0.0"


class MetricsController(PrometheusController):
    """Prometheus text exposition."""

    path = "/metrics"
    include_in_schema = False


async def _every(seconds: float, job: str, action: object) -> None:
    """Run `action()` every `seconds`, logging (not dying on) failures."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()  # type: ignore[operator]
        except Exception:
            _log.exception("background %s failed", job)


@contextlib.asynccontextmanager
async def _background(resources: Resources) -> AsyncIterator[None]:
    settings = resources.settings
    await resources.projector.catch_up()
    tasks = [
        asyncio.create_task(
            _every(
                settings.checkpoint_interval_seconds, "checkpoint", resources.checkpointer.sign_head
            )
        ),
        # views also follow appends made by other processes (workers, other replicas)
        asyncio.create_task(_every(1.0, "projector", resources.projector.catch_up)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await resources.checkpointer.sign_head()


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI document's metadata; `model-ledger openapi` writes it to openapi/."""
    return OpenAPIConfig(
        title="Model Ledger",
        version=API_VERSION,
        description="Event-sourced model governance and registry with a compiled scorer.",
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
        security=[{"bearer": []}],
        path="/schema",
    )


def create_app(settings: Settings, *, resources: Resources | None = None) -> Litestar:
    """Build the application; it opens its own resources unless given them (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            owned = resources or await stack.enter_async_context(open_resources(settings))
            app.state.resources = owned
            await stack.enter_async_context(_background(owned))
            yield

    prometheus = PrometheusConfig(app_name="model_ledger", prefix="model_ledger", group_path=True)
    return Litestar(
        route_handlers=[HealthController, TokenController, AuditController, MetricsController],
        lifespan=[lifespan],
        middleware=[
            prometheus.middleware,
            DefineMiddleware(BearerTokenMiddleware, exclude=PUBLIC_PATHS),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
        request_max_body_size=settings.max_body_bytes,
    )
