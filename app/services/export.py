"""Self-verifying audit bundles: the log (or one model's part of it) as JSON Lines.

The bundle ends at the newest checkpoint: a signed header states the head and how many
lines follow; then the checkpoints; then one line per position in order, the full event
when it is in scope, otherwise only its chain link, so continuity is still proven without
revealing other models' events; then a signed trailer over the digest of all of it. A
bundle cut short, with a line dropped or edited, fails verification (app.services.bundle_check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.services.audit import Head
from app.services.bundle import (
    BUNDLE_FORMAT,
    EventLine,
    Header,
    Line,
    Trailer,
    decoder,
    encoder,
    event_line,
    link_line,
)
from app.services.bundle_check import verify_file
from app.store.checkpoints import checkpoint_line, key_id, list_checkpoints, public_raw
from app.store.events import EventStore
from domain.bundle import header_message, trailer_message
from domain.chain import GENESIS_HASH

__all__ = ["export_log", "iter_events", "verify_file"]

_READ_BATCH = 5_000


class _Writer:
    """Writes lines, counting them and hashing every byte (the trailer's digest)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.lines = 0

    def write(self, line: Line) -> None:
        raw = encoder.encode(line) + b"\n"
        self._out.write(raw)
        self.digest.update(raw)
        self.lines += 1


async def export_log(
    store: EventStore,
    out: IO[bytes],
    signing_key: Ed25519PrivateKey,
    *,
    in_scope: Callable[[str], bool] | None = None,
    scope: str = "all",
) -> int:
    """Write the bundle up to the newest checkpoint (sign one first); events whose stream
    is not `in_scope` become links. Returns the lines written."""
    checkpoints = await list_checkpoints(store)
    newest = max(checkpoints, key=lambda c: c.position, default=None)
    head_position = 0 if newest is None else newest.position
    head_hash = GENESIS_HASH if newest is None else newest.head_hash
    exported_at = datetime.now(UTC)
    signature = signing_key.sign(
        header_message(
            bundle_format=BUNDLE_FORMAT,
            scope=scope,
            entries=head_position,
            checkpoints=len(checkpoints),
            head_position=head_position,
            head_hash=head_hash,
            exported_at=exported_at,
        )
    )
    head = Head(head_position, head_hash.hex())
    public_key = signing_key.public_key()
    writer = _Writer(out)
    writer.write(
        Header(
            format=BUNDLE_FORMAT,
            exported_at=exported_at,
            public_key=public_raw(public_key).hex(),
            key_id=key_id(public_key),
            scope=scope,
            entries=head_position,
            checkpoints=len(checkpoints),
            head=head,
            signature=signature.hex(),
        )
    )
    for checkpoint in checkpoints:
        writer.write(checkpoint_line(checkpoint))
    after = 0
    while batch := await store.read_stored(after, _READ_BATCH, until=head_position):
        for row in batch:
            keep = in_scope is None or in_scope(row.stream)
            writer.write(event_line(row) if keep else link_line(row))
        after = batch[-1].position
    digest = writer.digest.digest()
    closing = trailer_message(
        lines=writer.lines, head_position=head_position, head_hash=head_hash, digest=digest
    )
    writer.write(
        Trailer(
            lines=writer.lines,
            head=head,
            digest=digest.hex(),
            signature=signing_key.sign(closing).hex(),
        )
    )
    return writer.lines


def iter_events(path: Path) -> Iterator[EventLine]:
    """The full events of a bundle, for readers of an export."""
    with path.open("rb") as handle:
        for raw in handle:
            line = decoder.decode(raw)
            if isinstance(line, EventLine):
                yield line
