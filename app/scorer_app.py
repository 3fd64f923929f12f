"""`model-ledger scorer`: a scoring-only process, scaled out apart from the governance API.

It serves health, readiness, metrics, scoring and feedback; it follows the log (LISTEN, and a
poll) to switch versions when deployments change, and keeps the views it reads current.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import click
import msgspec
from litestar import Controller, Litestar, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException

from app.http.health import head_if_answering, health
from app.http.problems import problem_response
from app.http.score import scoring_routes
from app.main import assemble, openapi_config
from app.resources import Resources
from app.scoring.scorer import NOT_ROUTING, Scorer
from app.serve import configure_logging, uvicorn_server
from app.services.authenticator import TOKEN_EVENT_TYPES, Authenticator, TokensStale
from app.services.probes import Probes
from app.settings import Settings
from app.store.watch import LogWatcher


class ScorerReadiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    # "ok", or "unavailable": it still scores, with the tokens it knows (for a bounded time)
    database: str
    instance: str
    # (model, environment) pairs served, and those deployed but refused
    routes: int
    refused: int
    head_position: int


class ScorerReadinessController(Controller):
    """Readiness of a scorer; no authentication."""

    tags = ["operations"]  # noqa: RUF012 - Litestar reads it from the class

    @get(
        "/ready",
        operation_id="ready",
        responses={
            503: problem_response(
                "routes not loaded, or tokens not read from the database for too long"
            )
        },
    )
    async def ready(
        self,
        scorer: NamedDependency[Scorer],
        probes: NamedDependency[Probes],
        authenticator: NamedDependency[Authenticator],
    ) -> ScorerReadiness:
        """It can score: routes loaded, and tokens read from the database recently enough
        (it keeps scoring while the database is away, within that bound)."""
        if not scorer.ready:
            raise ServiceUnavailableException("not ready: routes not loaded yet")
        database = "ok"
        try:
            head = await head_if_answering(probes)
        except ServiceUnavailableException:
            try:
                authenticator.check_fresh()
            except TokensStale as error:
                raise ServiceUnavailableException(f"not ready: {error}") from error
            database, head = "unavailable", authenticator.position
        routes = scorer.routes().values()
        served = sum(1 for route in routes if not isinstance(route, str))
        return ScorerReadiness(
            status="ok",
            database=database,
            instance=scorer.config.instance,
            routes=served,
            refused=len(routes) - served,
            head_position=head,
        )


@contextlib.asynccontextmanager
async def _following(resources: Resources) -> AsyncIterator[None]:
    assert resources.settings.database_url is not None
    watcher = LogWatcher(
        resources.store,
        resources.settings.database_url,
        min_interval=resources.settings.follow_interval_seconds,
    )
    await watcher.start()
    await resources.authenticator.sync()
    await resources.scoring.scorer.refresh()
    tasks = [
        asyncio.create_task(
            resources.authenticator.follow(watcher.subscribe(only=TOKEN_EVENT_TYPES))
        ),
        *resources.scoring.tasks(watcher.subscribe(ignore=NOT_ROUTING)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watcher.stop()


def create_scorer_app(settings: Settings, *, resources: Resources | None = None) -> Litestar:
    """The scoring-only application; it opens its own resources unless given them (tests)."""
    routes = [health, ScorerReadinessController, *scoring_routes(settings)]
    return assemble(settings, resources, routes, _following, openapi_config("Model Ledger scorer"))


async def run_scorer(settings: Settings, *, sockets: list[socket.socket] | None = None) -> None:
    """Serve scoring until interrupted (Ctrl-C stops cleanly, writing the queued log); on
    `sockets` if given (bound already), else on settings.host and scorer_port."""
    configure_logging(settings)
    url = f"http://{settings.host}:{settings.scorer_port}"
    click.echo(f"Model Ledger scorer on {url}")
    server = uvicorn_server(create_scorer_app(settings), settings, settings.scorer_port)
    await server.serve(sockets=sockets)
