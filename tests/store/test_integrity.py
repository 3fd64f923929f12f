"""The log refuses changes, and verification finds the ones forced past the refusal."""

from __future__ import annotations

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.resources import Resources
from app.services.audit import verify_log
from app.store.checkpoints import Checkpointer
from app.store.events import EventStore
from domain.events import EventMeta, TokenRevoked
from tests.conftest import superuser

META = EventMeta(actor="tester", role="admin")
APP_ROLE = "model_ledger_app"


async def fill(store: EventStore, count: int) -> None:
    for n in range(count):
        await store.append(
            f"s-{n % 3}",
            [TokenRevoked(token_id=f"t{n}", reason="r")],
            meta=META,
            expected_version=None,
        )


@pytest.fixture
async def filled(resources: Resources) -> Resources:
    await fill(resources.store, 10)
    await resources.checkpointer.sign_head()
    return resources


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE position = 3",
        "DELETE FROM events WHERE position = 10",
        "TRUNCATE events",
        "UPDATE checkpoints SET position = 1",
        "TRUNCATE checkpoints",
    ],
)
async def test_the_database_refuses_changes_even_to_its_superuser(
    filled: Resources, database_url: str, statement: str
) -> None:
    async with superuser(database_url) as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE position = 3",
        "DELETE FROM events WHERE position = 10",
        "TRUNCATE events",
    ],
)
async def test_the_application_role_may_only_insert_and_select(
    filled: Resources, database_url: str, statement: str
) -> None:
    async with superuser(database_url) as conn:
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", APP_ROLE):
            pytest.skip("the migrating user could not create the application role")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert await conn.fetchval("SELECT count(*) FROM events") == 10
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)


async def test_an_edited_row_is_named_by_verify(filled: Resources, database_url: str) -> None:
    async with superuser(database_url) as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await conn.execute(
            """UPDATE events SET data = '{"type":"token.revoked","token_id":"t6","reason":"x"}'
               WHERE position = 7"""
        )
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert not report.ok
    assert report.first_broken_position == 7
    assert report.checked == 6


async def test_a_rehashed_edit_still_breaks_the_next_link(
    filled: Resources, database_url: str
) -> None:
    async with superuser(database_url) as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await conn.execute("UPDATE events SET hash = sha256(hash) WHERE position = 4")
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert report.first_broken_position == 4


async def test_deleting_the_newest_rows_is_caught_by_the_signed_checkpoint(
    filled: Resources, database_url: str
) -> None:
    async with superuser(database_url) as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await conn.execute("DELETE FROM events WHERE position > 8")
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    report = await verify_log(filled.store, filled.signing_key.public_key())
    # the remaining chain is intact; only the checkpoint shows what is missing
    assert not report.ok
    assert report.checked == 8
    assert report.first_broken_position == 9
    assert "deleted" in (report.problem or "")


async def test_a_checkpoint_signed_by_another_key_does_not_verify(filled: Resources) -> None:
    await fill(filled.store, 1)
    await Checkpointer(filled.store, Ed25519PrivateKey.generate()).sign_head()
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert not report.ok and "signature" in (report.problem or "")


async def test_a_deleted_middle_row_is_named(filled: Resources, database_url: str) -> None:
    async with superuser(database_url) as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await conn.execute("DELETE FROM events WHERE position = 5")
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert report.first_broken_position == 5


async def test_an_untouched_log_verifies(filled: Resources) -> None:
    await fill(filled.store, 3)
    await filled.checkpointer.sign_head()
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert report.ok and report.checked == 13 and report.checkpoints_checked == 2
    assert report.head.position == 13
