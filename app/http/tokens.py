"""API tokens."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.http.auth import event_meta, idempotency, requires
from app.http.problems import never_answers
from app.http.schemas import TokenCreate, TokenCreated
from app.resources import Resources
from app.services import tokens
from domain.tokens import IssueToken


class TokenController(Controller):
    """Issuing tokens (admin only)."""

    path = "/v1/tokens"
    tags = ["auth"]

    # a fresh random stream: no conflict; the body names nothing that must exist
    @post(operation_id="createToken", guards=[requires("admin")], opt=never_answers(404, 409))
    async def create(
        self, data: JSONBody[TokenCreate], request: Request[Any, Any, Any], state: State
    ) -> TokenCreated:
        """Issue a token for a subject and role; the token is shown only in this response."""
        resources: Resources = state.resources
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
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
