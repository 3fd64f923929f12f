"""The console's router, template engine and static files (wired by `app.main.create_app`)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.middleware import DefineMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app.ui.auth import OPEN_PATHS, UI_EXCEPTION_HANDLERS, SessionMiddleware
from app.ui.pages import ConsoleController
from app.ui.sign_in import SignInController, sign_out

_HERE = Path(__file__).parent
# what the API's bearer-token middleware leaves to the console's own sign-in
UI_PATHS = "^/ui(/|$)"
_STATIC_MAX_AGE = 3600


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja templates that escape every value (autoescape) and fail on a missing one."""
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        auto_reload=False,
    )
    # a server's paths are its operator's business: pages name files, the title the full path
    environment.filters["basename"] = lambda path: Path(str(path)).name
    return TemplateConfig(instance=JinjaTemplateEngine(engine_instance=environment))


def console_router() -> Router:
    """Every /ui route: pages behind the session middleware, sign-in and static files open."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[_HERE / "static"],
        cache_control=CacheControlHeader(max_age=_STATIC_MAX_AGE),
        include_in_schema=False,
    )
    return Router(
        path="/",
        route_handlers=[SignInController, ConsoleController, sign_out, static],
        middleware=[DefineMiddleware(SessionMiddleware, exclude=OPEN_PATHS)],
        exception_handlers=UI_EXCEPTION_HANDLERS,
        include_in_schema=False,
    )
