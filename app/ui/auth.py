"""Console sign-in: the session cookie, CSRF tokens, and errors answered as pages.

The cookie carries only a random session id (HttpOnly, SameSite=Strict, Secure when the
request came over TLS). A signed-in request's `user` is the token's Principal, so the API's
role guards (`app.http.auth.requires`) and event metadata apply to the console unchanged.
Every form that writes carries the session's CSRF token; the sign-in form, before any
session exists, a double-submit token (a cookie and a field that must match).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import quote

import asyncpg
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from app.http.problems import status_of
from app.resources import Resources
from app.services.authenticator import Principal, TokensStale
from app.ui.sessions import Session, Sessions
from domain.errors import DomainError, InvalidInput

SESSION_COOKIE = "ml_session"
SIGN_IN_COOKIE = "ml_sign_in"
CSRF_FIELD = "csrf_token"
UI_PATH = "/ui"
SIGN_IN_PATH = "/ui/sign-in"
# the console's routes reachable without a session
OPEN_PATHS = ["^/ui/sign-in$", "^/ui/static/"]
# a form value longer than this is refused (comments, tokens, searches)
MAX_FIELD = 4_000

Req = Request[Any, Any, Any]
# a second line of defence behind escaping: no inline script or style runs, nothing is framed
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def sessions_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Sessions:
    """The console's sessions (stored in the database, shared by every API process)."""
    sessions: Sessions = connection.app.state.ui_sessions
    return sessions


def pool_of(connection: ASGIConnection[Any, Any, Any, Any]) -> asyncpg.Pool:
    """The database pool the sessions are stored in."""
    resources: Resources = connection.app.state.resources
    return resources.pool


class SessionMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the session cookie to the Principal of the token it was opened with; 401
    (answered with the sign-in page) without a live session or once the token is revoked."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        sessions = sessions_of(connection)
        resources: Resources = connection.app.state.resources
        session_id = connection.cookies.get(SESSION_COOKIE, "")
        session = await sessions.get(resources.pool, session_id)
        if session is None:
            raise NotAuthorizedException("sign in to use the console")
        try:
            principal = resources.authenticator.principal_of(session.token_digest)
        except TokensStale as error:
            raise ServiceUnavailableException(str(error)) from error
        if principal is None:
            await sessions.close_token(resources.pool, session.token_digest)
            raise NotAuthorizedException("the token of this session was revoked: sign in again")
        return AuthenticationResult(user=principal, auth=session)


def cookie(request: Req, key: str, value: str, *, max_age: int | None = None) -> Cookie:
    """A console cookie: HttpOnly, SameSite=Strict, for /ui only, Secure over TLS."""
    return Cookie(
        key=key,
        value=value,
        path=UI_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=max_age,
    )


def new_csrf_token() -> str:
    """A random token for a form."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an absent token never matches."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


async def form_fields(request: Req) -> dict[str, str]:
    """A submitted form's fields (the last value of each); 400 on NUL or oversized values."""
    form = await request.form()
    fields: dict[str, str] = {}
    for key, value in form.items():
        if not isinstance(value, str):
            raise InvalidInput(f"field {key!r} must be text", field=key)
        if "\x00" in value or len(value) > MAX_FIELD:
            raise InvalidInput(
                f"field {key!r} must be text without NUL, at most {MAX_FIELD} characters",
                field=key,
            )
        fields[key] = value
    return fields


async def checked_form(request: Req) -> dict[str, str]:
    """The form of a signed-in write, refused (403) unless it carries the session's CSRF token."""
    fields = await form_fields(request)
    session: Session = request.auth
    if not same_token(fields.get(CSRF_FIELD), session.csrf_token):
        raise PermissionDeniedException(
            "the form's CSRF token is missing or wrong: reload the page"
        )
    return fields


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path only (no open redirect)."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return UI_PATH


def page(request: Req, template: str, *, status_code: int = 200, **context: Any) -> Template:
    """A console page with what every page shows: who is signed in, the CSRF token; never
    cached, scripts and styles from the console's own files only, never framed."""
    session = request.scope.get("auth")
    principal = request.scope.get("user")
    return Template(
        headers=PAGE_HEADERS,
        template_name=template,
        context={
            "principal": principal if isinstance(principal, Principal) else None,
            "csrf_token": session.csrf_token if isinstance(session, Session) else "",
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def _sign_in_redirect(request: Req, error: HTTPException) -> Response[Any]:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    response: Response[Any] = Redirect(
        f"{SIGN_IN_PATH}?next={quote(target, safe='')}", status_code=303
    )
    if request.cookies.get(SESSION_COOKIE):  # an expired or revoked session: forget it
        response.delete_cookie(SESSION_COOKIE, path=UI_PATH)
    response.headers["X-Reason"] = str(error.detail)
    return response


def _http_error(request: Req, error: HTTPException) -> Response[Any]:
    if isinstance(error, NotAuthorizedException):
        return _sign_in_redirect(request, error)
    return page(
        request,
        "error.html",
        status_code=error.status_code,
        status=error.status_code,
        detail=str(error.detail),
    )


def _domain_error(request: Req, error: DomainError) -> Response[Any]:
    status = status_of(error)
    return page(request, "error.html", status_code=status, status=status, detail=error.detail)


UI_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _http_error,
    DomainError: _domain_error,
}
