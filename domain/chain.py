"""The hash chain of the event log: canonical bytes of an event and the link hash.

The same framing is computed inside PostgreSQL by the `ml_append` function (see the
first migration) and here, so a chain can be verified from stored columns alone, online
or from an exported file. Every field is length-prefixed or fixed-width, so no two
different events frame to the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from datetime import UTC, datetime, timedelta

GENESIS_HASH = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(moment: datetime) -> int:
    """Whole microseconds since the Unix epoch, computed exactly (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">i", len(raw)) + raw


def canonical_bytes(
    *,
    position: int,
    stream: str,
    version: int,
    event_id: uuid.UUID,
    event_type: str,
    data: str,
    meta: str,
    recorded_at: datetime,
) -> bytes:
    """The bytes an event contributes to the chain: the stored columns, framed."""
    return b"".join(
        (
            struct.pack(">qq", position, version),
            event_id.bytes,
            _text(stream),
            _text(event_type),
            _text(data),
            _text(meta),
            struct.pack(">q", epoch_micros(recorded_at)),
        )
    )


def link_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """`sha256(prev_hash || canonical bytes)`: one link of the chain."""
    return hashlib.sha256(prev_hash + canonical).digest()
