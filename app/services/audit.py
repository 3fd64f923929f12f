"""Verifying the log: the hash chain, then the signed checkpoints against it.

The same audit runs over the database and over an exported file, so an auditor can check
an export on another machine with no server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.store.checkpoints import Checkpoint, key_id, list_checkpoints, signature_valid
from app.store.codec import StoredEvent
from app.store.events import EventStore
from domain.chain import ChainBreak, ChainVerifier

_READ_BATCH = 5_000


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """An event left out of a partial export: only its place in the chain."""

    position: int
    prev_hash: bytes
    hash: bytes


class Head(msgspec.Struct, frozen=True):
    """The newest verified position and its hash (hex)."""

    position: int
    hash: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a verification; `first_broken_position` names where it fails."""

    ok: bool
    checked: int
    head: Head
    first_broken_position: int | None
    problem: str | None
    checkpoints_checked: int
    latest_checkpoint: int | None


class LogAudit:
    """Incremental verification: feed rows in position order, then `finish`."""

    def __init__(self, checkpoints: Sequence[Checkpoint]) -> None:
        self._chain = ChainVerifier()
        self._checkpoints = list(checkpoints)
        self._wanted = {c.position for c in self._checkpoints}
        self._hash_at: dict[int, bytes] = {}
        self._break: ChainBreak | None = None

    @property
    def broken(self) -> bool:
        return self._break is not None

    def feed(self, rows: Iterable[StoredEvent | Link]) -> None:
        """Check rows continuing the chain; stops at the first break."""
        if self._break is not None:
            return
        try:
            for row in rows:
                if isinstance(row, Link):
                    self._chain.check_link(row.position, row.prev_hash, row.hash)
                else:
                    self._chain.check(
                        position=row.position,
                        stream=row.stream,
                        version=row.version,
                        event_id=row.event_id,
                        event_type=row.type,
                        data=row.data,
                        meta=row.meta,
                        recorded_at=row.recorded_at,
                        prev_hash=row.prev_hash,
                        stored_hash=row.hash,
                    )
                if row.position in self._wanted:
                    self._hash_at[row.position] = row.hash
        except ChainBreak as error:
            self._break = error

    def finish(self, public_key: Ed25519PublicKey) -> VerifyReport:
        """The report, once every row was fed: chain first, then each checkpoint."""
        problem = self._break.reason if self._break else None
        broken_at = self._break.position if self._break else None
        if self._break is None:
            broken_at, problem = self._check_checkpoints(public_key)
        return VerifyReport(
            ok=broken_at is None and problem is None,
            checked=self._chain.checked,
            head=Head(self._chain.position, self._chain.head_hash.hex()),
            first_broken_position=broken_at,
            problem=problem,
            checkpoints_checked=len(self._checkpoints),
            latest_checkpoint=max(self._wanted) if self._wanted else None,
        )

    def _check_checkpoints(self, public_key: Ed25519PublicKey) -> tuple[int | None, str | None]:
        expected_key = key_id(public_key)
        head = self._chain.position
        for checkpoint in self._checkpoints:
            if checkpoint.key_id != expected_key or not signature_valid(checkpoint, public_key):
                return None, f"checkpoint at position {checkpoint.position} has a bad signature"
            if checkpoint.position > head:
                return head + 1, (
                    f"the log ends at position {head}, but a checkpoint signed at "
                    f"{checkpoint.signed_at.isoformat()} covers position {checkpoint.position}: "
                    "newest events were deleted"
                )
            if self._hash_at.get(checkpoint.position) != checkpoint.head_hash:
                return checkpoint.position, (
                    f"hash at position {checkpoint.position} differs from the signed checkpoint"
                )
        return None, None


async def verify_log(store: EventStore, public_key: Ed25519PublicKey) -> VerifyReport:
    """Verify the whole log in the database, streaming it in batches."""
    audit = LogAudit(await list_checkpoints(store))
    after = 0
    while not audit.broken:
        batch = await store.read_stored(after, _READ_BATCH)
        if not batch:
            break
        audit.feed(batch)
        after = batch[-1].position
    return audit.finish(public_key)
