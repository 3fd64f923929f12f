"""Bearer-token authentication, role guards, and the per-request event metadata."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.resources import Resources
from app.services.authenticator import Principal, TokensStale
from app.store.events import Idempotency
from domain.errors import InvalidInput
from domain.events import EventMeta, Role

# Routes anyone may call: liveness, readiness, metrics and the live OpenAPI document.
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema"]

_MAX_IDEMPOTENCY_KEY = 200
# headers recorded in the log: visible ASCII and spaces, as a structured-field string is
# (RFC 8941); a NUL or control byte would be recorded, and PostgreSQL text cannot hold NUL
_HEADER_TEXT = re.compile(r"[\x20-\x7e]*")
_canonical = msgspec.json.Encoder(order="sorted")


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    """Resolves `Authorization: Bearer <token>` to a Principal, or answers 401 (503 when the
    process's token table is older than allowed: the database has been away too long)."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        resources: Resources = connection.app.state.resources
        try:
            principal = await resources.authenticator.authenticate(token.strip())
        except TokensStale as error:
            raise ServiceUnavailableException(
                str(error), extra={"code": "store_unavailable"}
            ) from error
        if principal is None:
            raise NotAuthorizedException(
                "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        return AuthenticationResult(user=principal, auth=token)


class RoleGuard:
    """A guard admitting only the given roles (403 otherwise); the OpenAPI names them."""

    __slots__ = ("roles",)

    def __init__(self, roles: frozenset[Role]) -> None:
        self.roles = roles

    # async although it never awaits: Litestar runs a sync guard in a worker thread
    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        """Refuse a principal whose role is not among `roles`."""
        if connection.scope.get("method") == "OPTIONS":
            return  # the automatic OPTIONS answer reveals only the allowed methods
        principal: Principal = connection.user
        if principal.role not in self.roles:
            raise PermissionDeniedException(
                f"role {principal.role!r} may not do this; allowed: {', '.join(sorted(self.roles))}"
            )


def requires(*roles: Role) -> RoleGuard:
    """A guard admitting only the given roles (403 otherwise)."""
    return RoleGuard(frozenset(roles))


def event_meta(connection: ASGIConnection[Any, Any, Any, Any]) -> EventMeta:
    """Who is acting, for the events this request appends."""
    principal: Principal = connection.user
    return EventMeta(
        actor=principal.subject,
        role=principal.role,
        request_id=recorded_header(connection, "x-request-id"),
        correlation_id=recorded_header(connection, "x-correlation-id"),
        idempotency_key=recorded_header(connection, "idempotency-key"),
    )


def recorded_header(connection: ASGIConnection[Any, Any, Any, Any], name: str) -> str | None:
    """A header the log records; 400 unless printable ASCII."""
    value = connection.headers.get(name)
    if value is not None and not _HEADER_TEXT.fullmatch(value):
        raise ClientException(f"header {name} must be printable ASCII (no control characters)")
    return value


def idempotency(request: Request[Any, Any, Any], payload: object) -> Idempotency | None:
    """The request's Idempotency-Key, scoped to the caller, bound to the parsed payload."""
    key = recorded_header(request, "idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1-{_MAX_IDEMPOTENCY_KEY} characters")
    principal: Principal = request.user
    digest = hashlib.sha256(
        f"{request.method} {request.url.path}\n".encode() + _canonical.encode(payload)
    ).hexdigest()
    return Idempotency(scope=principal.subject, key=key, request_digest=digest)


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Refuse JSON bodies carrying NUL characters: PostgreSQL text cannot hold them, so an
    event with one would be recorded but could never be projected."""
    writes_json = request.method in {"POST", "PUT", "PATCH"} and "json" in request.headers.get(
        "content-type", ""
    )
    if writes_json and b"\\u0000" in await request.body():
        raise InvalidInput("NUL characters (\\u0000) are not accepted in requests")
