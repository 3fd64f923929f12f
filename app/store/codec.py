"""Encoding domain events to stored columns and back. One reused encoder and decoder."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from domain.events import AnyEvent, Event, EventMeta
from domain.state import EventContext


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the log exactly as stored: what the hash chain covers."""

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    type: str
    data: str
    meta: str
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A row of the log decoded into its domain event.

    `gc=False`: these hold no reference cycles, and catch-up reads create them by the
    hundred thousand; tracking them made the garbage collector the main cost.
    """

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    recorded_at: datetime
    event: AnyEvent
    meta: EventMeta


_encoder = msgspec.json.Encoder()
_event_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
_meta_decoder = msgspec.json.Decoder(EventMeta)

# Column order shared by every read query, so rows can be unpacked positionally.
COLUMNS = "position, stream, version, event_id, type, data::text, meta::text, recorded_at"
CHAIN_COLUMNS = COLUMNS + ", prev_hash, hash"


def encode_event(event: Event) -> str:
    """The canonical JSON text of an event (its tag included)."""
    return _encoder.encode(event).decode()


def encode_meta(meta: EventMeta) -> str:
    """The canonical JSON text of event metadata."""
    return _encoder.encode(meta).decode()


def decode_event(data: str) -> AnyEvent:
    """The domain event of a stored `data` column."""
    return _event_decoder.decode(data)


def recorded_from_row(row: Any) -> RecordedEvent:
    """Decode a row selected with `COLUMNS`."""
    return recorded_page([row])[0]


def recorded_page(rows: Iterable[Any]) -> list[RecordedEvent]:
    """Decode rows selected with `COLUMNS`; metadata repeats within a page, decode it once."""
    metas: dict[str, EventMeta] = {}
    page = []
    for position, stream, version, event_id, _, data, meta_text, recorded_at in rows:
        meta = metas.get(meta_text)
        if meta is None:
            meta = metas[meta_text] = _meta_decoder.decode(meta_text)
        page.append(
            RecordedEvent(
                position=position,
                stream=stream,
                version=version,
                event_id=event_id,
                event=_event_decoder.decode(data),
                meta=meta,
                recorded_at=recorded_at,
            )
        )
    return page


def stored_from_row(row: Any) -> StoredEvent:
    """A row selected with `CHAIN_COLUMNS`, unchanged."""
    return StoredEvent(
        position=row[0],
        stream=row[1],
        version=row[2],
        event_id=row[3],
        type=row[4],
        data=row[5],
        meta=row[6],
        recorded_at=row[7],
        prev_hash=bytes(row[8]),
        hash=bytes(row[9]),
    )


def context_of(recorded: RecordedEvent) -> EventContext:
    """What the log adds to an event, for the domain's folds."""
    return EventContext(
        position=recorded.position,
        recorded_at=recorded.recorded_at,
        actor=recorded.meta.actor,
        role=recorded.meta.role,
        stream_version=recorded.version,
    )
