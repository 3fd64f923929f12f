"""Signed checkpoints of the chain head (Ed25519), so truncating the log is detectable."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.store.events import EventStore
from domain.chain import checkpoint_message


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A signed statement: the log had this head hash at this position at this time."""

    position: int
    head_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes


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
    message = checkpoint_message(checkpoint.position, checkpoint.head_hash, checkpoint.signed_at)
    try:
        public_key.verify(checkpoint.signature, message)
    except InvalidSignature:
        return False
    return True


class Checkpointer:
    """Signs the current head when it has moved since the last checkpoint."""

    def __init__(self, store: EventStore, key: Ed25519PrivateKey) -> None:
        self._store = store
        self._key = key
        self._key_id = key_id(key.public_key())

    async def sign_head(self) -> Checkpoint | None:
        """Record a checkpoint of the head; None when nothing changed since the last one."""
        position, head_hash = await self._store.head()
        last = await self._store.pool.fetchval("SELECT max(position) FROM checkpoints")
        if position == 0 or (last is not None and last >= position):
            return None
        now = datetime.now(UTC)  # microsecond precision, as PostgreSQL stores it
        signature = self._key.sign(checkpoint_message(position, head_hash, now))
        await self._store.pool.execute(
            "INSERT INTO checkpoints (position, head_hash, signed_at, key_id, signature) "
            "VALUES ($1, $2, $3, $4, $5)",
            position,
            head_hash,
            now,
            self._key_id,
            signature,
        )
        return Checkpoint(
            position=position,
            head_hash=head_hash,
            signed_at=now,
            key_id=self._key_id,
            signature=signature,
        )


async def list_checkpoints(store: EventStore) -> list[Checkpoint]:
    """Every checkpoint, oldest first."""
    rows = await store.pool.fetch(
        "SELECT position, head_hash, signed_at, key_id, signature FROM checkpoints ORDER BY id"
    )
    return [
        Checkpoint(
            position=row["position"],
            head_hash=bytes(row["head_hash"]),
            signed_at=row["signed_at"],
            key_id=row["key_id"],
            signature=bytes(row["signature"]),
        )
        for row in rows
    ]
