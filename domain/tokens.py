"""Issuing and revoking API tokens: the decisions, free of I/O."""

from __future__ import annotations

import re

import msgspec

from domain.errors import InvalidInput
from domain.events import ROLES, Role, TokenIssued, TokenRevoked

_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")


class IssueToken(msgspec.Struct, frozen=True, kw_only=True):
    """Command: give `subject` a token with `role`."""

    subject: str
    role: str


def token_stream(token_id: str) -> str:
    """The stream that holds one token's history."""
    return f"token-{token_id}"


def issue_token(command: IssueToken, *, token_id: str, token_sha256: str) -> list[TokenIssued]:
    """Decide the events of issuing a token; the caller generated id and secret."""
    if not _SUBJECT.match(command.subject):
        raise InvalidInput(
            "subject must be 1-128 characters of letters, digits and ._:@/+- "
            "starting with a letter or digit",
            field="subject",
        )
    if command.role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    role: Role = command.role
    return [
        TokenIssued(
            token_id=token_id, subject=command.subject, role=role, token_sha256=token_sha256
        )
    ]


def revoke_token(token_id: str, *, already_revoked: bool, reason: str) -> list[TokenRevoked]:
    """Decide the events of revoking a token; revoking twice changes nothing."""
    if already_revoked:
        return []
    return [TokenRevoked(token_id=token_id, reason=reason)]
