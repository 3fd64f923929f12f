"""Checkpoints signed before the chain (migration 0007) keep verifying after it; the chain
starts at the first checkpoint signed after the upgrade."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import DBAPIError

from app.resources import create_pool
from app.services.audit import verify_log
from app.store.checkpoints import Checkpointer, key_id, list_checkpoints
from app.store.events import EventStore
from app.store.migrate import migrate
from domain.chain import GENESIS_HASH, checkpoint_message
from domain.events import EventMeta, TokenRevoked
from tests.conftest import RUN_ID, with_database

# the revision before the checkpoint chain
BEFORE_CHAIN = "0006"
META = EventMeta(actor="tester", role="admin")


@pytest.fixture
async def old_database(server_url: str) -> AsyncIterator[str]:
    """A database migrated only up to the revision before the chain."""
    name = f"ml_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        await asyncio.to_thread(migrate, url, BEFORE_CHAIN)
        yield url
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def sign_the_old_way(pool: asyncpg.Pool, key: Ed25519PrivateKey) -> None:
    """What the signer did before 0007: (position, head hash, time), no sequence."""
    position, head_hash = await pool.fetchrow(
        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
    )
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO checkpoints (position, head_hash, signed_at, key_id, signature) "
        "VALUES ($1, $2, $3, $4, $5)",
        position,
        head_hash,
        now,
        key_id(key.public_key()),
        key.sign(checkpoint_message(position, bytes(head_hash), now)),
    )


async def append(store: EventStore, count: int, start: int) -> None:
    for n in range(start, start + count):
        await store.append(
            "s", [TokenRevoked(token_id=f"t{n}", reason="r")], meta=META, expected_version=None
        )


async def test_legacy_checkpoints_keep_verifying_and_the_chain_starts_after_them(
    old_database: str,
) -> None:
    key = Ed25519PrivateKey.generate()
    pool = await create_pool(old_database)
    try:
        store = EventStore(pool)
        for start in (0, 3):
            await append(store, 3, start)
            await sign_the_old_way(pool, key)
        await asyncio.to_thread(migrate, old_database)  # to the chain and beyond

        report = await verify_log(store, key.public_key())
        assert report.ok and report.legacy_checkpoints == 2 and report.checkpoint_sequence is None
        assert any("legacy" in note for note in report.unchecked)

        await append(store, 3, 6)
        first = await Checkpointer(store, key).sign_head()
        assert first is not None and first.sequence == 1
        assert first.prev_checkpoint_hash == GENESIS_HASH
        await append(store, 1, 9)
        await Checkpointer(store, key).sign_head()

        checkpoints = await list_checkpoints(store)
        assert [(c.sequence, c.position) for c in checkpoints] == [
            (None, 3),
            (None, 6),
            (1, 9),
            (2, 10),
        ]
        report = await verify_log(store, key.public_key())
        assert report.ok, report.problem
        assert (report.legacy_checkpoints, report.checkpoint_sequence) == (2, 2)
        assert report.checkpoints_checked == 4

        # a legacy checkpoint still catches a rewrite below it
        async with pool.acquire() as conn:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("UPDATE events SET hash = sha256(hash) WHERE position = 3")
            await conn.execute("UPDATE events SET prev_hash = sha256(prev_hash) WHERE position = 4")
        report = await verify_log(store, key.public_key())
        assert not report.ok and report.first_broken_position == 3
    finally:
        await pool.close()


async def test_the_downgrade_refuses_to_drop_chained_checkpoints(old_database: str) -> None:
    from alembic import command

    from app.store.migrate import alembic_config

    key = Ed25519PrivateKey.generate()
    await asyncio.to_thread(migrate, old_database)
    pool = await create_pool(old_database)
    try:
        await append(EventStore(pool), 2, 0)
        await Checkpointer(EventStore(pool), key).sign_head()
    finally:
        await pool.close()
    with pytest.raises(DBAPIError, match="chained checkpoints exist"):
        await asyncio.to_thread(command.downgrade, alembic_config(old_database), BEFORE_CHAIN)
