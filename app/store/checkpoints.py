"""Signed, chained checkpoints of the chain head (Ed25519), so truncating the log is detectable.

Each checkpoint signs (sequence, position, head hash, previous checkpoint's hash, time): a
missing one is a gap in the sequence, an edited one breaks the next one's link. Rows from
before the chain (no sequence) are legacy: their signatures still verify, the chain starts
at the first chained one. Signing is serialized across processes by an advisory lock, so
the sequence never forks; it never takes the append lock, so appends do not wait on it.
Every new checkpoint is also witnessed outside the database (app.store.witness).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.store.events import EventStore
from app.store.witness import Witness, checkpoints_signed
from domain.chain import (
    GENESIS_HASH,
    CheckpointLink,
    chained_checkpoint_message,
    checkpoint_hash,
    checkpoint_message,
)

_log = logging.getLogger("model_ledger.checkpoints")

# ml_append holds 7244501 while it extends the chain; signers take their own key
SIGN_LOCK = 7244502

_COLUMNS = "sequence, position, head_hash, prev_checkpoint_hash, signed_at, key_id, signature"

# The newest chained checkpoint, the hash the log has at its position now, and the head.
_SIGNING_STATE = f"""
SELECT c.*, (SELECT e.hash FROM events e WHERE e.position = c.position) AS hash_now,
       h.position AS head_position, h.hash AS head_hash_now
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM checkpoints WHERE sequence IS NOT NULL
                     ORDER BY sequence DESC LIMIT 1) AS c ON true
  LEFT JOIN LATERAL (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS h
    ON true
"""  # noqa: S608 - a constant column list


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A signed statement: the log had this head hash at this position at this time.

    `sequence` and `prev_checkpoint_hash` are None on legacy (unchained) checkpoints.
    """

    position: int
    head_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes
    sequence: int | None = None
    prev_checkpoint_hash: bytes | None = None

    @property
    def chained(self) -> bool:
        return self.sequence is not None

    def message(self) -> bytes:
        """The exact bytes the signature covers."""
        if self.sequence is None or self.prev_checkpoint_hash is None:
            return checkpoint_message(self.position, self.head_hash, self.signed_at)
        return chained_checkpoint_message(
            sequence=self.sequence,
            position=self.position,
            head_hash=self.head_hash,
            prev_checkpoint_hash=self.prev_checkpoint_hash,
            signed_at=self.signed_at,
        )

    def link(self) -> CheckpointLink:
        """Its place in the chain of checkpoints (chained checkpoints only)."""
        assert self.sequence is not None
        assert self.prev_checkpoint_hash is not None
        return CheckpointLink(
            sequence=self.sequence,
            position=self.position,
            prev_checkpoint_hash=self.prev_checkpoint_hash,
            digest=checkpoint_hash(self.message()),
        )


class CheckpointRefused(Exception):
    """The log no longer extends the newest checkpoint: signing it would bless a rewrite."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key."""
    return hashlib.sha256(public_raw(public_key)).hexdigest()[:16]


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a private key (the server secret other keys derive from)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The server's signing key, generated on first use (file mode 0600).

    Replicas of one deployment must share it (mount the same file).
    """
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_raw(key))
    return key


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """True when the checkpoint was signed by this key."""
    try:
        public_key.verify(checkpoint.signature, checkpoint.message())
    except (InvalidSignature, struct.error):
        # struct.error: a value out of range (from an edited file) was never signed
        return False
    return True


class Checkpointer:
    """Signs the current head when it has moved since the newest checkpoint."""

    def __init__(
        self, store: EventStore, key: Ed25519PrivateKey, witness: Witness | None = None
    ) -> None:
        self._store = store
        self._key = key
        self._key_id = key_id(key.public_key())
        self._witness = witness

    @property
    def witness(self) -> Witness | None:
        return self._witness

    async def drain(self) -> None:
        """Give witness posts in flight a moment to finish (shutdown)."""
        if self._witness is not None:
            await self._witness.drain()

    async def sign_head(self) -> Checkpoint | None:
        """Record the next checkpoint of the head; None when the head has not moved.

        Raises CheckpointRefused when the log does not extend the newest checkpoint.
        """
        async with self._store.pool.acquire() as conn:
            # a session lock, held past the insert until the witness file has the line, so
            # processes sharing a data folder write it in sequence order
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", SIGN_LOCK)
                checkpoint = await self._sign(conn)
                if checkpoint is not None and self._witness is not None:
                    await asyncio.to_thread(self._witness.write_file, checkpoint_json(checkpoint))
                await conn.execute("SELECT pg_advisory_unlock($1)", SIGN_LOCK)
            except BaseException:
                # Whatever stopped it (a failure, a cancelled task: possibly just as the server
                # granted the lock), the session may hold the lock, and pooled connections are
                # not reset on release: the connection is closed, and the lock with it.
                conn.terminate()
                raise
        if checkpoint is not None and self._witness is not None:
            self._witness.post(checkpoint_json(checkpoint))
        return checkpoint

    async def _sign(self, conn: asyncpg.Connection) -> Checkpoint | None:
        state = await conn.fetchrow(_SIGNING_STATE)
        if state["head_position"] is None:
            return None
        position, head_hash = int(state["head_position"]), bytes(state["head_hash_now"])
        last = None if state["sequence"] is None else _from_row(state)
        if last is not None:
            refusal = _refusal(last, state["hash_now"])
            if refusal is not None:
                checkpoints_signed().labels("refused").inc()
                raise CheckpointRefused(refusal)
            if last.position >= position:
                return None
        now = datetime.now(UTC)  # microsecond precision, as PostgreSQL stores it
        unsigned = Checkpoint(
            sequence=1 if last is None else last.link().sequence + 1,
            position=position,
            head_hash=head_hash,
            prev_checkpoint_hash=GENESIS_HASH if last is None else last.link().digest,
            signed_at=now,
            key_id=self._key_id,
            signature=b"",
        )
        checkpoint = msgspec.structs.replace(unsigned, signature=self._key.sign(unsigned.message()))
        await conn.execute(
            f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",  # noqa: S608
            checkpoint.sequence,
            checkpoint.position,
            checkpoint.head_hash,
            checkpoint.prev_checkpoint_hash,
            checkpoint.signed_at,
            checkpoint.key_id,
            checkpoint.signature,
        )
        checkpoints_signed().labels("signed").inc()
        return checkpoint


def _refusal(last: Checkpoint, hash_now: bytes | None) -> str | None:
    """Why the log does not extend the newest checkpoint, if it does not."""
    if hash_now is None:
        return (
            f"checkpoint #{last.sequence} covers position {last.position}, "
            "which the log no longer has: newest events were deleted"
        )
    if bytes(hash_now) != last.head_hash:
        return (
            f"the hash at position {last.position} differs from checkpoint #{last.sequence}: "
            "the log was rewritten"
        )
    return None


class CheckpointLine(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag="checkpoint",
    tag_field="kind",
):
    """A checkpoint as a JSON line (bundles and the witness file); legacy ones carry no
    sequence nor previous hash. Binary fields are lowercase hex."""

    sequence: int | None = None
    position: int
    head_hash: str
    prev_checkpoint_hash: str | None = None
    # a time without its zone would frame to no defined bytes: such a line does not decode
    signed_at: Annotated[datetime, msgspec.Meta(tz=True)]
    key_id: str
    signature: str


_line_encoder = msgspec.json.Encoder()


def checkpoint_line(checkpoint: Checkpoint) -> CheckpointLine:
    """The JSON-line form of a checkpoint."""
    prev = checkpoint.prev_checkpoint_hash
    return CheckpointLine(
        sequence=checkpoint.sequence,
        position=checkpoint.position,
        head_hash=checkpoint.head_hash.hex(),
        prev_checkpoint_hash=None if prev is None else prev.hex(),
        signed_at=checkpoint.signed_at,
        key_id=checkpoint.key_id,
        signature=checkpoint.signature.hex(),
    )


def checkpoint_json(checkpoint: Checkpoint) -> bytes:
    """One JSON line (no newline) of a checkpoint."""
    return _line_encoder.encode(checkpoint_line(checkpoint))


def from_line(line: CheckpointLine) -> Checkpoint:
    """A checkpoint read from its JSON-line form; ValueError on bad hex."""
    prev = line.prev_checkpoint_hash
    return Checkpoint(
        sequence=line.sequence,
        position=line.position,
        head_hash=bytes.fromhex(line.head_hash),
        prev_checkpoint_hash=None if prev is None else bytes.fromhex(prev),
        signed_at=line.signed_at,
        key_id=line.key_id,
        signature=bytes.fromhex(line.signature),
    )


def _from_row(row: asyncpg.Record) -> Checkpoint:
    prev = row["prev_checkpoint_hash"]
    return Checkpoint(
        sequence=row["sequence"],
        position=row["position"],
        head_hash=bytes(row["head_hash"]),
        prev_checkpoint_hash=None if prev is None else bytes(prev),
        signed_at=row["signed_at"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
    )


async def list_checkpoints(store: EventStore, *, until: int | None = None) -> list[Checkpoint]:
    """Every checkpoint (up to position `until`): legacy ones first, then the chain in order."""
    rows = await store.pool.fetch(
        f"SELECT {_COLUMNS} FROM checkpoints "  # noqa: S608 - a constant column list
        "WHERE position <= coalesce($1, position) "
        "ORDER BY sequence IS NOT NULL, sequence, id",
        until,
    )
    return [_from_row(row) for row in rows]


async def newest_checkpoint(store: EventStore) -> Checkpoint | None:
    """The newest chained checkpoint, if any."""
    row = await store.pool.fetchrow(
        f"SELECT {_COLUMNS} FROM checkpoints WHERE sequence IS NOT NULL "  # noqa: S608
        "ORDER BY sequence DESC LIMIT 1"
    )
    return None if row is None else _from_row(row)
