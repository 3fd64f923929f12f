"""The lines of an audit bundle (JSON Lines; docs/audit-format.md describes every byte).

A bundle is: a signed header; the signed checkpoints; one entry per position 1..head in
order (the full event when in scope, else only its chain link); a signed trailer.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.services.audit import Head, Link
from app.store.checkpoints import CheckpointLine
from app.store.codec import StoredEvent
from domain.bundle import BUNDLE_FORMAT

__all__ = ["BUNDLE_FORMAT", "CheckpointLine"]

# a time without its zone would frame to no defined bytes: such a line does not decode
Moment = Annotated[datetime, msgspec.Meta(tz=True)]


class Header(msgspec.Struct, frozen=True, kw_only=True, tag="header", tag_field="kind"):
    """What the bundle holds, signed before any of it: `entries` event or link lines
    (positions 1..head), `checkpoints` checkpoint lines, ending at `head`."""

    format: str
    exported_at: Moment
    public_key: str
    key_id: str
    scope: str
    entries: int = 0
    checkpoints: int = 0
    head: Head = msgspec.field(default_factory=lambda: Head(0, bytes(32).hex()))
    signature: str = ""


class EventLine(msgspec.Struct, frozen=True, kw_only=True, tag="event", tag_field="kind"):
    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    type: str
    data: str
    meta: str
    recorded_at: Moment
    prev_hash: str
    hash: str


class LinkLine(msgspec.Struct, frozen=True, kw_only=True, tag="link", tag_field="kind"):
    position: int
    prev_hash: str
    hash: str


class Trailer(msgspec.Struct, frozen=True, kw_only=True, tag="trailer", tag_field="kind"):
    """Closes the bundle: `lines` before it (header included), the head again, and
    `digest`, sha256 of every byte before the trailer line."""

    lines: int
    head: Head
    digest: str
    signature: str


Line = Header | EventLine | LinkLine | CheckpointLine | Trailer
encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Line)


def event_line(row: StoredEvent) -> EventLine:
    """An in-scope event, every stored column."""
    return EventLine(
        position=row.position,
        stream=row.stream,
        version=row.version,
        event_id=row.event_id,
        type=row.type,
        data=row.data,
        meta=row.meta,
        recorded_at=row.recorded_at,
        prev_hash=row.prev_hash.hex(),
        hash=row.hash.hex(),
    )


def link_line(row: StoredEvent) -> LinkLine:
    """An out-of-scope event: its place in the chain only."""
    return LinkLine(position=row.position, prev_hash=row.prev_hash.hex(), hash=row.hash.hex())


def entry(line: EventLine | LinkLine) -> StoredEvent | Link:
    """A bundle entry as the audit reads it; ValueError on bad hex."""
    if isinstance(line, LinkLine):
        return Link(
            position=line.position,
            prev_hash=bytes.fromhex(line.prev_hash),
            hash=bytes.fromhex(line.hash),
        )
    return StoredEvent(
        position=line.position,
        stream=line.stream,
        version=line.version,
        event_id=line.event_id,
        type=line.type,
        data=line.data,
        meta=line.meta,
        recorded_at=line.recorded_at,
        prev_hash=bytes.fromhex(line.prev_hash),
        hash=bytes.fromhex(line.hash),
    )
