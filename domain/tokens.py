"""Issuing and revoking API tokens: the decisions, free of I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from domain.errors import Conflict, InvalidInput, NotFound
from domain.events import ROLES, Event, Role, TokenIssued, TokenRevoked
from domain.subjects import subject_key

_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
MAX_REASON = 500


class IssueToken(msgspec.Struct, frozen=True, kw_only=True):
    """Command: give `subject` a token with `role`."""

    subject: str
    role: str


class LastAdminToken(Conflict):
    """Revoking this token would leave no live admin token: nobody could issue another."""

    code = "last_admin_token"


class TokenFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What a token's stream says about it."""

    token_id: str
    subject: str
    role: Role
    revoked: bool = False


def token_stream(token_id: str) -> str:
    """The stream that holds one token's history."""
    return f"token-{token_id}"


def issue_token(command: IssueToken, *, token_id: str, token_sha256: str) -> list[TokenIssued]:
    """Decide the events of issuing a token; the caller generated id and secret.

    The subject is recorded normalised (`subject_key`): subjects compare case-insensitively.
    """
    subject = command.subject.strip()
    if not _SUBJECT.match(subject):
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
            token_id=token_id, subject=subject_key(subject), role=role, token_sha256=token_sha256
        )
    ]


def fold_token(events: Iterable[Event]) -> TokenFacts | None:
    """A token's facts from its stream's events; None for a stream that holds none."""
    facts: TokenFacts | None = None
    for event in events:
        if isinstance(event, TokenIssued):
            subject = subject_key(event.subject)  # older events may differ in case
            facts = TokenFacts(token_id=event.token_id, subject=subject, role=event.role)
        elif isinstance(event, TokenRevoked) and facts is not None:
            facts = msgspec.structs.replace(facts, revoked=True)
    return facts


def revoke_token(
    token: TokenFacts | None, token_id: str, *, reason: str, live_admin_tokens: int
) -> list[TokenRevoked]:
    """Decide the events of revoking a token; revoking twice changes nothing.

    `live_admin_tokens` counts the admin tokens not revoked, this one included: the last
    one is never revoked, or nobody could issue tokens again (`tokens create` on the
    command line still can).
    """
    if token is None:
        raise NotFound(f"no token {token_id!r}")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"reason must be at most {MAX_REASON} characters", field="reason")
    if token.revoked:
        return []
    if token.role == "admin" and live_admin_tokens <= 1:
        raise LastAdminToken(
            f"token {token_id} is the last live admin token; issue another admin token first"
        )
    return [TokenRevoked(token_id=token_id, reason=reason)]
