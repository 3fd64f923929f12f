"""`model-ledger scorer`: a scoring-only process, scaled out apart from the governance API.

It serves health, readiness, metrics, scoring and feedback; it follows the log (LISTEN, and a
poll) to switch versions when deployments change, and keeps the views it reads current.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import click
import msgspec
from litestar import Controller, Litestar, get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from app.http.auth import PUBLIC_PATHS, BearerTokenMiddleware, refuse_nul
from app.http.problems import EXCEPTION_HANDLERS, ProblemDocs, problem_response
from app.http.schemas import Health
from app.http.score import scoring_routes
from app.resources import Resources, open_resources
from app.serve import configure_logging, uvicorn_server
from app.settings import Settings
from app.store.watch import LogWatcher

_READY_TIMEOUT = 2.0


class ScorerReadiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    database: str
    instance: str
    # (model, environment) pairs served, and those deployed but refused
    routes: int
    refused: int
    head_position: int


class ScorerMetricsController(PrometheusController):
    """Prometheus text exposition."""

    path = "/metrics"
    include_in_schema = False


class ScorerOperations(Controller):
    """Operational probes of a scorer; no authentication."""

    tags = ["operations"]  # noqa: RUF012 - Litestar reads it from the class

    @get("/health", operation_id="health", sync_to_thread=False)
    def health(self) -> Health:
        """The process is alive."""
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="ready",
        responses={503: problem_response("the database does not answer, or routes not loaded")},
    )
    async def ready(self, state: State) -> ScorerReadiness:
        """The database answers and the routes were loaded once."""
        resources: Resources = state.resources
        scorer = resources.scoring.scorer
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                head, _ = await resources.store.head()
        except Exception as error:
            raise ServiceUnavailableException(
                f"not ready: {type(error).__name__}: {error}"
            ) from error
        if not scorer.ready:
            raise ServiceUnavailableException("not ready: routes not loaded yet")
        routes = scorer.routes().values()
        served = sum(1 for route in routes if not isinstance(route, str))
        return ScorerReadiness(
            status="ok",
            database="ok",
            instance=scorer.config.instance,
            routes=served,
            refused=len(routes) - served,
            head_position=head,
        )


@contextlib.asynccontextmanager
async def _following(resources: Resources) -> AsyncIterator[None]:
    assert resources.settings.database_url is not None
    watcher = LogWatcher(resources.store, resources.settings.database_url)
    await watcher.start()
    await resources.scoring.scorer.refresh()
    tasks = resources.scoring.tasks(watcher.subscribe())
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watcher.stop()


def create_scorer_app(settings: Settings, *, resources: Resources | None = None) -> Litestar:
    """The scoring-only application; it opens its own resources unless given them (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            owned = resources
            if owned is None:
                owned = await stack.enter_async_context(open_resources(settings))
            app.state.resources = owned
            await stack.enter_async_context(_following(owned))
            yield

    prometheus = PrometheusConfig(app_name="model_ledger", prefix="model_ledger", group_path=True)
    return Litestar(
        route_handlers=[ScorerOperations, *scoring_routes(settings), ScorerMetricsController],
        lifespan=[lifespan],
        middleware=[
            prometheus.middleware,
            DefineMiddleware(BearerTokenMiddleware, exclude=PUBLIC_PATHS),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_nul,
        openapi_config=OpenAPIConfig(
            title="Model Ledger scorer",
            version="1.0.0",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
            path="/schema",
        ),
        plugins=[ProblemDocs(PUBLIC_PATHS)],
        request_max_body_size=settings.max_body_bytes,
    )


async def run_scorer(settings: Settings) -> None:
    """Serve scoring until interrupted (Ctrl-C stops cleanly, writing the queued log)."""
    configure_logging(settings)
    url = f"http://{settings.host}:{settings.scorer_port}"
    click.echo(f"Model Ledger scorer on {url}")
    await uvicorn_server(create_scorer_app(settings), settings, settings.scorer_port).serve()
