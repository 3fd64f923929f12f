"""The one mapping from errors to RFC 9457 problem details."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
from litestar import HttpMethod, Request, Response
from litestar.constants import RESERVED_KWARGS
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.types import ExceptionHandlersMap

from app.http.auth import RoleGuard
from app.http.schemas import Problem
from app.outages import OUTAGES, unavailable_store
from domain import errors

_log = logging.getLogger("model_ledger.http")

MEDIA_TYPE = "application/problem+json"
# what a 503 for an unavailable store asks clients to wait before retrying
RETRY_AFTER_SECONDS = 5
# an outage fails every request: the log says so once per store per this many seconds
_OUTAGE_LOG_SECONDS = 10.0
_outage_logged: dict[str, float] = {}

# Domain errors carry no HTTP meaning; it is assigned here and nowhere else.
_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidInput: 422,
    errors.IdempotencyKeyReused: 422,
    errors.NotFound: 404,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
}


TYPE_PREFIX = "urn:model-ledger:problem:"
# The code of a problem no domain error names: the status's own, in the domain's spelling
# (snake case; 413 as the domain's `payload_too_large`, 500 without internals).
_STATUS_CODES = {413: "payload_too_large", 500: "internal_error"}


def status_code_name(status: int) -> str:
    """The problem code of an HTTP status: `bad_request`, `method_not_allowed`, ..."""
    found = _STATUS_CODES.get(status)
    return found or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def problem(
    status: int, detail: str, *, code: str | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    """A problem-details response: `type` is the URN of its `code`, present on every one."""
    code = code or status_code_name(status)
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return Response(body, status_code=status, media_type=MEDIA_TYPE)


def status_of(error: errors.DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    return 400


def domain_error(_: Request[Any, Any, Any], error: errors.DomainError) -> Response[dict[str, Any]]:
    """Expected failures of the domain and the store."""
    return problem(status_of(error), error.detail, code=error.code, **error.extra)


def http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    """Framework errors (validation, auth, size limits, unknown routes)."""
    extra: dict[str, Any] = {}
    if isinstance(error.extra, dict):
        extra.update(error.extra)
    elif error.extra:
        extra["errors"] = error.extra
    code = extra.pop("code", None)  # a route may name its problem (`store_unavailable`)
    response = problem(error.status_code, str(error.detail), code=code, **extra)
    response.headers.update(error.headers or {})
    return response


def database_data_error(
    _: Request[Any, Any, Any], error: asyncpg.DataError
) -> Response[dict[str, Any]]:
    """Input the database cannot represent (e.g. a NUL in a path parameter)."""
    return problem(422, f"input the database cannot store: {error}", code="invalid_input")


def unavailable(store: str) -> Response[dict[str, Any]]:
    """503 for a store that cannot be reached now, with `Retry-After`."""
    response = problem(
        503, f"{store} is unavailable right now; retry later", code="store_unavailable"
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def store_unavailable(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, Any]]:
    """The database or Redis cannot be reached: 503, never 500; the pools reconnect by
    themselves once it is back. The error's own words (socket paths) stay in the log."""
    store = unavailable_store(error)
    if store is None:  # a misconfiguration in an outage's clothing (bad password, TLS)
        return _bug(request, error)
    now = time.monotonic()
    if now - _outage_logged.get(store, -_OUTAGE_LOG_SECONDS) >= _OUTAGE_LOG_SECONDS:
        _outage_logged[store] = now
        _log.warning(
            "%s is unavailable (%s: %s); answering 503 (logged once per %.0f s)",
            store,
            type(error).__name__,
            error,
            _OUTAGE_LOG_SECONDS,
        )
    return unavailable(store)


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """A bug (500, logged with its traceback, reported without internals), unless it was
    raised while handling an outage (a rollback on a lost connection): that is the outage."""
    if unavailable_store(error) is not None:
        return store_unavailable(request, error)
    return _bug(request, error)


def _bug(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(500, "internal error; it has been logged")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    errors.DomainError: domain_error,
    HTTPException: http_error,
    asyncpg.DataError: database_data_error,
    **dict.fromkeys(OUTAGES, store_unavailable),
    Exception: unexpected_error,
}


# --- the OpenAPI side: which problems each operation can answer ---------------------------

_WRITES = frozenset({HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE})
_NEVER = "never_answers"
_ALSO = "also_answers"


def never_answers(*statuses: int) -> dict[str, frozenset[int]]:
    """Handler `opt` for statuses the rules below would document but the route cannot answer.

    The rules err towards documenting: an undocumented answer is a broken contract, an
    unused documented one is only noise.
    """
    return {_NEVER: frozenset(statuses)}


def also_answers(*statuses: int) -> dict[str, frozenset[int]]:
    """Handler `opt` for statuses the rules below miss (a query parameter naming a model)."""
    return {_ALSO: frozenset(statuses)}


def problem_response(description: str) -> ResponseSpec:
    """An OpenAPI response documented as `application/problem+json` with the Problem schema."""
    # no Faker examples: they would make the committed document differ on every run
    return ResponseSpec(
        Problem, description=description, media_type=MEDIA_TYPE, generate_examples=False
    )


def _forbidden(handler: HTTPRouteHandler) -> str | None:
    # the layers' own guards: resolve_guards() returns them wrapped
    guards = [g for layer in handler.ownership_layers for g in layer.guards or ()]
    if not guards:
        return None
    role_sets = [g.roles for g in guards if isinstance(g, RoleGuard)]
    if role_sets:
        # a caller must pass every layer's guard
        roles = sorted(frozenset.intersection(*role_sets))
        return f"the caller may not do this (roles allowed: {', '.join(roles) or 'none'})"
    return "a guard refused the caller"


def problem_statuses(
    route: HTTPRoute, handler: HTTPRouteHandler, *, public: bool
) -> dict[int, str]:
    """The problem statuses an operation can answer, each with its OpenAPI description."""
    fields = handler.parsed_fn_signature.parameters
    dependencies = handler.resolve_dependencies()
    body = "data" in fields
    named = [n for n in fields if n not in RESERVED_KWARGS and n not in dependencies]
    # the same test Litestar uses to document its (JSON) 400; ours replaces it
    parameters = bool(named or route.path_parameters or handler.resolve_layered_parameters())
    writes = bool(set(handler.http_methods) & _WRITES)
    also: frozenset[int] = handler.opt.get(_ALSO, frozenset())
    statuses: dict[int, str | None] = {
        401: None if public else "no valid bearer token (`WWW-Authenticate: Bearer`)",
        403: _forbidden(handler),
        400: "the request could not be parsed or failed validation (see `errors`)"
        if body or parameters
        else None,
        # a body may name things too (a version, a model); routes that name none opt out
        404: "something the request names does not exist"
        if route.path_parameters or body or 404 in also
        else None,
        # every append names the stream version it decided on
        409: "the current state does not allow this (e.g. `concurrency_conflict`, unmet gates)"
        if writes
        else None,
        413: "the body is larger than the limit" if body else None,
        # domain validation, Idempotency-Key reuse, text the database cannot store
        422: "the input is well-formed but not acceptable (see `code`, `field`)"
        if body or parameters or writes
        else None,
        # every route but liveness reads the database (authentication does, at least)
        503: "a store (the database or Redis) is unavailable; retry after `Retry-After` seconds",
    }
    excluded: Iterable[int] = handler.opt.get(_NEVER, ())
    return {
        status: text
        for status, text in sorted(statuses.items())
        if text is not None and status not in excluded
    }


class ProblemDocs(ReceiveRoutePlugin):
    """Documents on every route, as it is registered, the problem responses it can answer.

    A handler's own `responses=` win; routes registered later get the same treatment.
    """

    __slots__ = ("_public",)

    def __init__(self, public_paths: Iterable[str]) -> None:
        self._public = [re.compile(p) for p in public_paths]

    def receive_route(self, route: BaseRoute) -> None:
        """Add the problem responses to each of the route's handlers."""
        if not isinstance(route, HTTPRoute):
            return
        public = any(p.search(route.path) for p in self._public)
        for handler in route.route_handlers:
            statuses = problem_statuses(
                route, handler, public=public or bool(handler.opt.get("exclude_from_auth"))
            )
            own: Mapping[int, ResponseSpec] = handler.responses or {}
            documented = {s: problem_response(text) for s, text in statuses.items()}
            handler.responses = {**documented, **own}
