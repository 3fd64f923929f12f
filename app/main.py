"""`create_app(settings)`: the Litestar application. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from litestar import Controller, Litestar, Router
from litestar.datastructures import State
from litestar.logging import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from app.http.audit import AuditController
from app.http.auth import PUBLIC_PATHS, BearerTokenMiddleware, refuse_nul
from app.http.bodies import BodyRequest
from app.http.deps import DEPENDENCIES
from app.http.experiments import ExperimentController
from app.http.form_docs import MultipartDocs
from app.http.forms import parse_multipart
from app.http.health import HealthController, health
from app.http.jobs import JobController
from app.http.metrics import ApiMetricsController, MetricsController
from app.http.models import ModelController
from app.http.problems import EXCEPTION_HANDLERS, ProblemDocs
from app.http.registry import PolicyController, RegistryController
from app.http.retraining import DatasetController, RetrainingController
from app.http.score import scoring_routes
from app.http.tokens import TokenController
from app.http.uploads import UploadController
from app.outages import report_failure
from app.resources import Resources, open_resources
from app.scoring.scorer import NOT_ROUTING, ROUTING_EVENTS
from app.services.authenticator import TOKEN_EVENT_TYPES
from app.services.dispatch import JOB_REQUESTS
from app.services.retraining import ALERTS as RETRAINING_ALERTS
from app.settings import Settings
from app.store.events import VIEWS_BEHIND
from app.store.watch import LogWatcher
from app.ui.routes import UI_PATHS, console_router, template_config
from app.ui.sessions import Sessions

_log = logging.getLogger("model_ledger")

API_VERSION = "1.0.0"
# a missed notification (connection blip) delays a view by at most this long
_FOLLOW_POLL_SECONDS = 5.0
# a score answers in a fraction of a millisecond, an upload or a history in seconds
HTTP_BUCKETS: list[str | float] = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
]


async def _every(seconds: float, job: str, action: object) -> None:
    """Run `action()` every `seconds`, logging (not dying on) failures."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()  # type: ignore[operator]
        except Exception as error:
            report_failure(_log, f"background {job}", error)


async def _follow_log(resources: Resources, watcher: LogWatcher) -> None:
    """Keep the views caught up with appends made by other processes (workers, replicas)
    that left some behind (every view is written with its events otherwise), and poll."""
    subscription = watcher.subscribe(only=[VIEWS_BEHIND])
    while True:
        await subscription.wait(_FOLLOW_POLL_SECONDS)
        try:
            await resources.projector.catch_up()
        except Exception as error:
            report_failure(_log, "projection catch-up", error)


@contextlib.asynccontextmanager
async def _background(resources: Resources) -> AsyncIterator[None]:
    settings = resources.settings
    assert settings.database_url is not None
    await resources.projector.catch_up()
    watcher = LogWatcher(
        resources.store, settings.database_url, min_interval=settings.follow_interval_seconds
    )
    await watcher.start()
    await resources.authenticator.sync()
    await resources.scoring.scorer.refresh()
    # a write that moves what serves answers once this process's scorer routes by it
    unfollow = resources.governance.follow_before_answering(
        ROUTING_EVENTS, resources.scoring.scorer.refresh
    )
    tasks = [
        asyncio.create_task(
            resources.authenticator.follow(watcher.subscribe(only=TOKEN_EVENT_TYPES))
        ),
        asyncio.create_task(
            _every(
                settings.checkpoint_interval_seconds, "checkpoint", resources.checkpointer.sign_head
            )
        ),
        asyncio.create_task(_follow_log(resources, watcher)),
        *resources.scoring.tasks(watcher.subscribe(ignore=NOT_ROUTING)),
    ]
    if settings.dispatch_jobs:
        tasks.append(
            asyncio.create_task(resources.dispatcher.run(watcher.subscribe(only=JOB_REQUESTS).wait))
        )
        tasks.append(asyncio.create_task(resources.sweeper.run()))
        tasks.append(
            asyncio.create_task(
                resources.retraining.run(watcher.subscribe(only=RETRAINING_ALERTS).wait)
            )
        )
    try:
        yield
    finally:
        unfollow()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watcher.stop()
        with contextlib.suppress(Exception):
            await resources.checkpointer.sign_head()
        await resources.checkpointer.drain()


def openapi_config(title: str = "Model Ledger") -> OpenAPIConfig:
    """The OpenAPI document's metadata; `model-ledger openapi` writes the API's to openapi/."""
    return OpenAPIConfig(
        title=title,
        version=API_VERSION,
        description="Event-sourced model governance and registry with a compiled scorer.",
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
        security=[{"bearer": []}],
        path="/schema",
    )


Background = Callable[[Resources], contextlib.AbstractAsyncContextManager[None]]


def assemble(
    settings: Settings,
    resources: Resources | None,
    route_handlers: Sequence[ControllerRouterHandler],
    background: Background,
    openapi: OpenAPIConfig,
    *,
    metrics: type[Controller] = MetricsController,
    templates: TemplateConfig | None = None,  # type: ignore[type-arg]
    state: dict[str, object] | None = None,
) -> Litestar:
    """An application of this server: its routes and background work, with the shared
    lifespan (resources opened unless given, as tests do), authentication, metrics,
    problem details and body limit."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            owned = resources
            if owned is None:
                owned = await stack.enter_async_context(open_resources(settings))
            app.state.resources = owned
            await stack.enter_async_context(background(owned))
            yield

    # by route template (group_path), never the raw path: one series per route, not per name
    prometheus = PrometheusConfig(
        app_name="model_ledger", prefix="model_ledger", group_path=True, buckets=HTTP_BUCKETS
    )
    return Litestar(
        route_handlers=[*route_handlers, metrics],
        lifespan=[lifespan],
        middleware=[
            prometheus.middleware,
            # the console (/ui) signs in with a session of its own (app/ui/auth.py)
            DefineMiddleware(BearerTokenMiddleware, exclude=[*PUBLIC_PATHS, UI_PATHS]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_nul,
        openapi_config=openapi,
        # Litestar configures the root logger when the app is built, after the process set
        # its level: the level the operator asked for (`--log-level`) is given again here
        logging_config=LoggingConfig(
            root={"handlers": ["queue_listener"], "level": settings.log_level.upper()}
        ),
        plugins=[ProblemDocs(PUBLIC_PATHS), MultipartDocs()],
        request_max_body_size=settings.max_body_bytes,
        request_class=BodyRequest,
        dependencies=DEPENDENCIES,
        template_config=templates,
        state=State(state or {}),
    )


def create_app(settings: Settings, *, resources: Resources | None = None) -> Litestar:
    """Build the application; it opens its own resources unless given them (tests)."""
    uploads = Router(
        path="/",
        route_handlers=[UploadController],
        request_max_body_size=settings.max_upload_bytes,
        before_request=parse_multipart,
    )
    routes = [
        health,
        HealthController,
        TokenController,
        AuditController,
        ModelController,
        ExperimentController,
        RegistryController,
        PolicyController,
        JobController,
        RetrainingController,
        DatasetController,
        uploads,
        *scoring_routes(settings),
        console_router(),
    ]
    return assemble(
        settings,
        resources,
        routes,
        _background,
        openapi_config(),
        metrics=ApiMetricsController,
        templates=template_config(),
        # console sessions: their settings here, the sessions in the database (app/ui/sessions.py)
        state={"ui_sessions": Sessions()},
    )
