"""The one mapping from errors to RFC 9457 problem details."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from domain import errors

_log = logging.getLogger("model_ledger.http")

MEDIA_TYPE = "application/problem+json"

# Domain errors carry no HTTP meaning; it is assigned here and nowhere else.
_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidInput: 422,
    errors.IdempotencyKeyReused: 422,
    errors.NotFound: 404,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
}


def problem(
    status: int, detail: str, *, code: str | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    """A problem-details response."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:model-ledger:problem:{code or phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    body.update(extra)
    return Response(body, status_code=status, media_type=MEDIA_TYPE)


def _status_of(error: errors.DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    return 400


def domain_error(_: Request[Any, Any, Any], error: errors.DomainError) -> Response[dict[str, Any]]:
    """Expected failures of the domain and the store."""
    return problem(_status_of(error), error.detail, code=error.code, **error.extra)


def http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    """Framework errors (validation, auth, size limits, unknown routes)."""
    extra: dict[str, Any] = {}
    if isinstance(error.extra, dict):
        extra.update(error.extra)
    elif error.extra:
        extra["errors"] = error.extra
    response = problem(error.status_code, str(error.detail), **extra)
    response.headers.update(error.headers or {})
    return response


def database_data_error(
    _: Request[Any, Any, Any], error: asyncpg.DataError
) -> Response[dict[str, Any]]:
    """Input the database cannot represent (e.g. a NUL in a path parameter)."""
    return problem(422, f"input the database cannot store: {error}", code="invalid_input")


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """A bug: logged with its traceback, reported without internals."""
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(500, "internal error; it has been logged")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    errors.DomainError: domain_error,
    HTTPException: http_error,
    asyncpg.DataError: database_data_error,
    Exception: unexpected_error,
}
