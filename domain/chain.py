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

import msgspec

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


class ChainBreak(Exception):
    """Where and why the chain stops verifying."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


class ChainVerifier:
    """Folds stored events in position order and checks every link.

    Feed every event of the log (`check`), or, for a partial export, the links of the
    events it leaves out (`check_link`), so continuity is still proven.
    """

    def __init__(self) -> None:
        self.position = 0
        self.head_hash = GENESIS_HASH
        self.checked = 0

    def check_link(self, position: int, prev_hash: bytes, stored_hash: bytes) -> None:
        """Check that a row continues the chain; raises ChainBreak."""
        if position != self.position + 1:
            raise ChainBreak(self.position + 1, f"missing position (next stored is {position})")
        if prev_hash != self.head_hash:
            raise ChainBreak(position, "prev_hash does not match the previous event's hash")
        self.position = position
        self.head_hash = stored_hash

    def check(
        self,
        *,
        position: int,
        stream: str,
        version: int,
        event_id: uuid.UUID,
        event_type: str,
        data: str,
        meta: str,
        recorded_at: datetime,
        prev_hash: bytes,
        stored_hash: bytes,
    ) -> None:
        """Recompute an event's hash from its columns and check it links on; raises ChainBreak."""
        try:
            canonical = canonical_bytes(
                position=position,
                stream=stream,
                version=version,
                event_id=event_id,
                event_type=event_type,
                data=data,
                meta=meta,
                recorded_at=recorded_at,
            )
        except (struct.error, OverflowError, UnicodeError):
            # only a file can hold these (an edited export): no stored row frames so
            raise ChainBreak(position, "a field cannot be framed (out of range)") from None
        if link_hash(prev_hash, canonical) != stored_hash:
            raise ChainBreak(position, "stored hash does not match the event's content")
        self.check_link(position, prev_hash, stored_hash)
        self.checked += 1


def checkpoint_message(position: int, head_hash: bytes, signed_at: datetime) -> bytes:
    """The bytes a legacy (unchained, before sequences) checkpoint covers: (position, head
    hash, time). Still verified; no longer signed."""
    return (
        b"model-ledger/checkpoint/v1\n"
        + struct.pack(">q", position)
        + head_hash
        + struct.pack(">q", epoch_micros(signed_at))
    )


def chained_checkpoint_message(
    *,
    sequence: int,
    position: int,
    head_hash: bytes,
    prev_checkpoint_hash: bytes,
    signed_at: datetime,
) -> bytes:
    """The bytes a chained checkpoint covers: (sequence, position, head hash, the previous
    checkpoint's hash, time). Its own hash (`checkpoint_hash`) is the next one's link."""
    return b"".join(
        (
            b"model-ledger/checkpoint/v2\n",
            struct.pack(">qq", sequence, position),
            head_hash,
            prev_checkpoint_hash,
            struct.pack(">q", epoch_micros(signed_at)),
        )
    )


def checkpoint_hash(message: bytes) -> bytes:
    """A chained checkpoint's hash: sha256 of the message it signs."""
    return hashlib.sha256(message).digest()


class CheckpointLink(msgspec.Struct, frozen=True, kw_only=True):
    """What the chain of checkpoints checks of one chained checkpoint (signature apart)."""

    sequence: int
    position: int
    prev_checkpoint_hash: bytes
    digest: bytes


class CheckpointChain:
    """Folds chained checkpoints in sequence order: 1, 2, 3 ..., each naming the hash of
    the one before (the first names GENESIS_HASH), positions never going back.

    A checkpoint missing in the middle is a gap in the sequence; one edited breaks the
    next one's link (and its own signature, which the caller checks).
    """

    def __init__(self) -> None:
        self.sequence = 0
        self.position = 0
        self.digest = GENESIS_HASH

    def check(self, link: CheckpointLink) -> str | None:
        """None when `link` continues the chain, else why not (and the chain stays put)."""
        expected = self.sequence + 1
        if link.sequence != expected:
            return (
                f"checkpoint #{expected} is missing (the next one is #{link.sequence})"
                if link.sequence > expected
                else f"checkpoint #{link.sequence} appears twice or out of order"
            )
        if link.prev_checkpoint_hash != self.digest:
            return f"checkpoint #{link.sequence} does not link to checkpoint #{self.sequence}"
        if link.position < self.position:
            return (
                f"checkpoint #{link.sequence} covers position {link.position}, behind "
                f"checkpoint #{self.sequence} at {self.position}"
            )
        self.sequence, self.position, self.digest = link.sequence, link.position, link.digest
        return None
