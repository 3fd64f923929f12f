"""Request and response bodies of the REST API. Not domain events: they may differ."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from domain.events import Role


class Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


class TokenCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    subject: str
    role: Role


class TokenCreated(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    subject: str
    role: Role
    token: str
    position: int


class EventOut(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored; `data` and `meta` are the exact JSON the chain covers."""

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    type: str
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime
    prev_hash: str
    hash: str


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[EventOut]
    next: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    database: str
    redis: str
    head_position: int


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    code: str | None = None
