"""Self-verifying audit bundles: the log (or one model's part of it) as JSON Lines.

Line 1 is a header with the public key; then one line per position in order: the full
event when it is in scope, otherwise only its chain link, so continuity is still proven
without revealing other models' events; then the signed checkpoints.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.services.audit import Link, LogAudit, VerifyReport
from app.store.checkpoints import Checkpoint, key_id, list_checkpoints, public_raw
from app.store.codec import StoredEvent
from app.store.events import EventStore

FORMAT = "model-ledger-audit/1"
_READ_BATCH = 5_000


class Header(msgspec.Struct, frozen=True, kw_only=True, tag="header", tag_field="kind"):
    format: str
    exported_at: datetime
    public_key: str
    key_id: str
    scope: str


class EventLine(msgspec.Struct, frozen=True, kw_only=True, tag="event", tag_field="kind"):
    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    type: str
    data: str
    meta: str
    recorded_at: datetime
    prev_hash: str
    hash: str


class LinkLine(msgspec.Struct, frozen=True, kw_only=True, tag="link", tag_field="kind"):
    position: int
    prev_hash: str
    hash: str


class CheckpointLine(msgspec.Struct, frozen=True, kw_only=True, tag="checkpoint", tag_field="kind"):
    position: int
    head_hash: str
    signed_at: datetime
    key_id: str
    signature: str


Line = Header | EventLine | LinkLine | CheckpointLine
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Line)


async def export_log(
    store: EventStore,
    out: IO[bytes],
    public_key: Ed25519PublicKey,
    *,
    in_scope: Callable[[str], bool] | None = None,
    scope: str = "all",
) -> int:
    """Write the bundle; events whose stream is not `in_scope` become links. Returns lines."""
    header = Header(
        format=FORMAT,
        exported_at=datetime.now(UTC),
        public_key=public_raw(public_key).hex(),
        key_id=key_id(public_key),
        scope=scope,
    )
    lines = _write(out, header)
    after = 0
    while batch := await store.read_stored(after, _READ_BATCH):
        for row in batch:
            keep = in_scope is None or in_scope(row.stream)
            lines += _write(out, _event_line(row) if keep else _link_line(row))
        after = batch[-1].position
    for checkpoint in await list_checkpoints(store):
        lines += _write(out, _checkpoint_line(checkpoint))
    return lines


def verify_file(path: Path, public_key_hex: str | None = None) -> VerifyReport:
    """Verify a bundle offline; pin `public_key_hex` to trust only that key."""
    with path.open("rb") as handle:
        lines = (_decoder.decode(raw) for raw in handle if raw.strip())
        header = next(lines, None)
        if not isinstance(header, Header) or header.format != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} bundle")
        if public_key_hex is not None and public_key_hex.lower() != header.public_key:
            raise ValueError("the bundle is signed by a different key than the one pinned")
        checkpoints: list[Checkpoint] = []
        rows: list[StoredEvent | Link] = []
        for line in lines:
            if isinstance(line, CheckpointLine):
                checkpoints.append(_checkpoint(line))
            elif isinstance(line, (EventLine, LinkLine)):
                rows.append(_row(line))
    audit = LogAudit(checkpoints)
    audit.feed(rows)
    return audit.finish(Ed25519PublicKey.from_public_bytes(bytes.fromhex(header.public_key)))


def iter_events(path: Path) -> Iterator[EventLine]:
    """The full events of a bundle, for readers of an export."""
    with path.open("rb") as handle:
        for raw in handle:
            line = _decoder.decode(raw)
            if isinstance(line, EventLine):
                yield line


def _write(out: IO[bytes], line: Line) -> int:
    out.write(_encoder.encode(line) + b"\n")
    return 1


def _event_line(row: StoredEvent) -> EventLine:
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


def _link_line(row: StoredEvent) -> LinkLine:
    return LinkLine(position=row.position, prev_hash=row.prev_hash.hex(), hash=row.hash.hex())


def _checkpoint_line(checkpoint: Checkpoint) -> CheckpointLine:
    return CheckpointLine(
        position=checkpoint.position,
        head_hash=checkpoint.head_hash.hex(),
        signed_at=checkpoint.signed_at,
        key_id=checkpoint.key_id,
        signature=checkpoint.signature.hex(),
    )


def _checkpoint(line: CheckpointLine) -> Checkpoint:
    return Checkpoint(
        position=line.position,
        head_hash=bytes.fromhex(line.head_hash),
        signed_at=line.signed_at,
        key_id=line.key_id,
        signature=bytes.fromhex(line.signature),
    )


def _row(line: EventLine | LinkLine) -> StoredEvent | Link:
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
