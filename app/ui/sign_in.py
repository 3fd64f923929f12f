"""Signing in to the console with a token (pasted once), and out again."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from app.http.auth import requires
from app.services.authenticator import Authenticator, TokensStale, hash_token
from app.ui.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    UI_PATH,
    checked_form,
    cookie,
    form_fields,
    new_csrf_token,
    page,
    pool_of,
    safe_next,
    same_token,
    sessions_of,
)

Req = Request[Any, Any, Any]
SIGNED_IN = requires("admin", "ci", "approver", "auditor", "scorer")


class SignInController(Controller):
    """Signing in with a token (pasted once) and out again."""

    path = SIGN_IN_PATH
    include_in_schema = False

    @get(operation_id="uiSignInForm")
    async def form(
        self, request: Req, next_: Annotated[str | None, QueryParameter(name="next")] = None
    ) -> Template:
        """The sign-in form, with a fresh double-submit CSRF token."""
        token = new_csrf_token()
        response = page(
            request, "sign_in.html", sign_in_token=token, next=safe_next(next_), error=None
        )
        response.cookies.append(cookie(request, SIGN_IN_COOKIE, token))
        return response

    @post(operation_id="uiSignIn", status_code=303)
    async def sign_in(
        self,
        request: Req,
        authenticator: NamedDependency[Authenticator],
    ) -> Response[Any]:
        """Verify the token and open a session; the token itself is not kept."""
        fields = await form_fields(request)
        target = safe_next(fields.get("next"))
        if not same_token(fields.get(CSRF_FIELD), request.cookies.get(SIGN_IN_COOKIE)):
            return _sign_in_again(request, target, 403, "The form expired: sign in again.")
        token = fields.get("token", "").strip()
        try:
            principal = await authenticator.authenticate(token) if token else None
        except TokensStale:
            return _sign_in_again(request, target, 503, "Tokens cannot be checked right now.")
        if principal is None:
            return _sign_in_again(request, target, 401, "That token is not valid (or revoked).")
        sessions = sessions_of(request)
        if old := request.cookies.get(SESSION_COOKIE):
            await sessions.close(pool_of(request), old)
        session_id, _ = await sessions.open(pool_of(request), hash_token(token))
        response: Response[Any] = Redirect(target, status_code=303)
        response.cookies.append(cookie(request, SESSION_COOKIE, session_id))
        response.delete_cookie(SIGN_IN_COOKIE, path=UI_PATH)
        return response


def _sign_in_again(request: Req, target: str, status: int, message: str) -> Template:
    token = new_csrf_token()
    response = page(
        request,
        "sign_in.html",
        status_code=status,
        sign_in_token=token,
        next=target,
        error=message,
    )
    response.cookies.append(cookie(request, SIGN_IN_COOKIE, token))
    return response


@post(
    "/ui/sign-out",
    operation_id="uiSignOut",
    guards=[SIGNED_IN],
    status_code=303,
    include_in_schema=False,
)
async def sign_out(request: Req) -> Response[Any]:
    """End the session."""
    await checked_form(request)
    await sessions_of(request).close(pool_of(request), request.cookies.get(SESSION_COOKIE, ""))
    response: Response[Any] = Redirect(SIGN_IN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=UI_PATH)
    return response
