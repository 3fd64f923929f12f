"""API tokens: issuing, listing and revoking them (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody, QueryParameter

from app.http.auth import event_meta, idempotency, requires
from app.http.problems import never_answers
from app.http.schemas import (
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
    TokenRevoke,
    TokenRevokedOut,
)
from app.services.tokens import Tokens
from domain.events import Role
from domain.tokens import IssueToken

Req = Request[Any, Any, Any]


class TokenController(Controller):
    """Issuing, listing and revoking tokens (admin only)."""

    path = "/v1/tokens"
    tags = ["auth"]
    guards = [requires("admin")]

    # a fresh random stream: no conflict; the body names nothing that must exist
    @post(operation_id="createToken", opt=never_answers(404, 409))
    async def create(
        self, data: JSONBody[TokenCreate], request: Req, tokens: NamedDependency[Tokens]
    ) -> TokenCreated:
        """Issue a token for a subject and role; the token is shown only in this response."""
        issued = await tokens.issue(
            IssueToken(subject=data.subject, role=data.role),
            meta=event_meta(request),
            idempotency=idempotency(request, data),
        )
        return TokenCreated(
            token_id=issued.token_id,
            subject=issued.subject,
            role=issued.role,
            token=issued.token,
            position=issued.position,
        )

    @get(operation_id="listTokens")
    async def list_all(
        self,
        tokens: NamedDependency[Tokens],
        subject: Annotated[
            str | None, QueryParameter(description="only this subject's (case-insensitive)")
        ] = None,
        role: Annotated[Role | None, QueryParameter(description="only tokens of this role")] = None,
    ) -> TokenList:
        """Every token issued, revoked ones included, in issuing order; never the secret."""
        found = await tokens.listed(subject=subject, role=role)
        return TokenList(tokens=[TokenOut(**msgspec.structs.asdict(t)) for t in found])

    @delete("/{token_id:str}", operation_id="revokeToken", status_code=200)
    async def revoke(
        self,
        token_id: FromPath[str],
        request: Req,
        tokens: NamedDependency[Tokens],
        data: JSONBody[TokenRevoke | None] = None,
        reason: Annotated[
            str | None, QueryParameter(description="why; a JSON body `{reason}` also works")
        ] = None,
    ) -> TokenRevokedOut:
        """Revoke a token: 200 with its revocation (the first one if it was revoked before:
        nothing is appended again); 409 `last_admin_token` for the last live admin token."""
        if data is not None and reason is not None:
            raise ValidationException("give the reason in the body or in the query, not both")
        payload = data or TokenRevoke(reason=reason or "")
        revocation = await tokens.revoke(
            token_id,
            reason=payload.reason,
            meta=event_meta(request),
            idempotency=idempotency(request, payload),
        )
        return TokenRevokedOut(**msgspec.structs.asdict(revocation))
