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


# What a compromised application could try, to change the log past its triggers: each is
# refused by privilege (42501), before any trigger runs.
APP_ROLE_REFUSED = [
    "SET session_replication_role = replica",
    "SET SESSION AUTHORIZATION postgres",
    "SET ROLE model_ledger_owner",
    "ALTER TABLE events DISABLE TRIGGER events_no_update_delete",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "ALTER TABLE checkpoints DISABLE TRIGGER checkpoints_no_truncate",
    "DROP TRIGGER events_no_update_delete ON events",
    """CREATE TRIGGER sneaky BEFORE INSERT ON events
       FOR EACH ROW EXECUTE FUNCTION ml_refuse_change()""",
    """CREATE OR REPLACE FUNCTION ml_refuse_change() RETURNS trigger LANGUAGE plpgsql
       AS $$ BEGIN RETURN OLD; END $$""",
    "ALTER TABLE events OWNER TO model_ledger_app",
    "UPDATE events SET data = '{}' WHERE position = 3",
    "DELETE FROM events WHERE position = 10",
    "TRUNCATE events",
    "DROP TABLE events",
    "UPDATE checkpoints SET position = 1",
    "DELETE FROM checkpoints",
    "TRUNCATE checkpoints",
    "DROP TABLE checkpoints",
    "UPDATE idempotency_keys SET request_digest = 'x'",
    "DELETE FROM idempotency_keys",
    "CREATE TABLE shadow (id int)",
]


@pytest.mark.parametrize("statement", APP_ROLE_REFUSED)
async def test_the_application_role_cannot_change_the_log(
    filled: Resources, database_url: str, statement: str
) -> None:
    conn = await asyncpg.connect(database_url)  # what the application connects as
    try:
        assert await conn.fetchval("SELECT current_user") == APP_ROLE
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM events") == 10
        assert await conn.fetchval("SELECT count(*) FROM checkpoints") == 1
    finally:
        await conn.close()
    report = await verify_log(filled.store, filled.signing_key.public_key())
    assert report.ok and report.checked == 10


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
