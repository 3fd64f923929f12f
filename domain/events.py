"""Every event the ledger records: frozen, tagged msgspec Structs. Tags never change.

Stored shapes evolve only additively: a new field gets a default, so every event ever
written still decodes (see the golden file in tests/domain).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Role = Literal["admin", "ci", "approver", "auditor", "scorer"]
ROLES: tuple[Role, ...] = ("admin", "ci", "approver", "auditor", "scorer")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of all events; the tag is the stored `type` column."""


class TokenIssued(Event, frozen=True, kw_only=True, tag="token.issued"):
    """An API token was issued. Only its sha256 is recorded, never the token."""

    token_id: str
    subject: str
    role: Role
    token_sha256: str


class TokenRevoked(Event, frozen=True, kw_only=True, tag="token.revoked"):
    """An API token stops authenticating."""

    token_id: str
    reason: str = ""


AnyEvent = TokenIssued | TokenRevoked


def event_type(event: Event) -> str:
    """The stable tag of an event."""
    return str(type(event).__struct_config__.tag)


class EventMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who caused an event and why: recorded beside every event."""

    actor: str
    role: str
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None
