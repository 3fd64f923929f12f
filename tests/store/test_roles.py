"""Least privilege: who owns the schema, what the application role may do, and upgrades
of databases that earlier versions migrated (and ran) as the superuser."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic import command

import app.store.migrate
from app.resources import open_resources
from app.services.audit import verify_log
from app.settings import Settings
from app.store.migrate import alembic_config, head_revision, migrate
from app.store.roles import APP_ROLE, OWNER_ROLE, inspect_role
from domain.events import EventMeta, TokenRevoked
from tests.conftest import superuser, superuser_url, with_user

META = EventMeta(actor="tester", role="admin")
_NOT_THE_OWNERS = """
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S', 'v')
   AND c.relowner <> $1::regrole
UNION ALL
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> $1::regrole
"""


async def not_the_owners(url: str) -> list[str]:
    """Objects of the ledger's schema that the owner role does not own."""
    conn = await asyncpg.connect(url)
    try:
        return sorted(row[0] for row in await conn.fetch(_NOT_THE_OWNERS, OWNER_ROLE))
    finally:
        await conn.close()


@pytest.fixture
def blank(blank_database: str) -> str:
    return blank_database


def _settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        redis_url=redis_url,
        queue_name=f"model-ledger-test:{uuid.uuid4().hex[:12]}",
        dispatch_jobs=False,
    )


async def _append(settings: Settings, count: int, *, sign: bool = True) -> None:
    async with open_resources(settings) as resources:
        for n in range(count):
            await resources.store.append(
                "s", [TokenRevoked(token_id=f"t{n}", reason="r")], meta=META, expected_version=None
            )
        if sign:
            await resources.checkpointer.sign_head()


async def test_the_migrated_schema_belongs_to_the_owner(database_url: str) -> None:
    assert await not_the_owners(superuser_url(database_url)) == []
    async with superuser(database_url) as conn:
        owned_by_app = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = $1::regrole", APP_ROLE
        )
        app = await conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", APP_ROLE)
    assert owned_by_app == 0
    assert app["rolcanlogin"] and not app["rolsuper"] and not app["rolcreaterole"]
    assert not app["rolreplication"] and not app["rolbypassrls"]


async def test_the_application_role_is_least_privileged(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        report = await inspect_role(conn)
    finally:
        await conn.close()
    assert report.name == APP_ROLE
    assert report.least_privilege and report.problems == []


async def test_the_report_names_a_superuser(database_url: str) -> None:
    async with superuser(database_url) as conn:
        report = await inspect_role(conn)
    assert not report.least_privilege
    assert report.problems[0].startswith("superuser")


async def test_the_report_names_the_owner_of_the_log(database_url: str) -> None:
    conn = await asyncpg.connect(with_user(database_url, OWNER_ROLE))
    try:
        report = await inspect_role(conn)
        # and it is right: the owner can switch the immutability off
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    finally:
        await conn.close()
    assert report.name == OWNER_ROLE and not report.least_privilege
    assert any("events, checkpoints, idempotency_keys" in p for p in report.problems)


async def test_the_report_names_a_change_granted_on_the_log(database_url: str) -> None:
    async with superuser(database_url) as conn:
        await conn.execute(f"GRANT UPDATE ON checkpoints TO {APP_ROLE}")
    conn = await asyncpg.connect(database_url)
    try:
        report = await inspect_role(conn)
    finally:
        await conn.close()
    assert report.problems == ["may UPDATE on checkpoints"]


async def test_a_database_migrated_as_the_superuser_upgrades_to_the_owner(
    blank: str, redis_url: str, tmp_path: Path
) -> None:
    # what earlier versions did: migrate, and run, as the superuser (appends, no checkpoint:
    # today's signer writes the chained columns of 0007)
    await asyncio.to_thread(migrate, blank, "0005")
    legacy = _settings(tmp_path, blank, redis_url)
    await _append(legacy, 3, sign=False)
    assert "events" in await not_the_owners(blank)

    await asyncio.to_thread(migrate, blank)

    assert await not_the_owners(blank) == []
    app = _settings(tmp_path, with_user(blank, APP_ROLE), redis_url)
    await _append(app, 2)  # the application role appends and signs checkpoints
    async with open_resources(app) as resources:
        report = await resources.database_role.report()
        assert report.name == APP_ROLE and report.least_privilege
        verified = await verify_log(resources.store, resources.signing_key.public_key())
    assert verified.ok and verified.checked == 5 and verified.checkpoints_checked == 1


async def test_a_downgrade_gives_the_schema_back_and_an_upgrade_takes_it_again(
    blank: str,
) -> None:
    await asyncio.to_thread(migrate, blank)
    await asyncio.to_thread(command.downgrade, alembic_config(blank), "0005")
    assert "events" in await not_the_owners(blank)
    await asyncio.to_thread(migrate, blank)
    assert await not_the_owners(blank) == []


async def test_the_owner_cannot_take_a_schema_the_superuser_owns_and_is_told_why(
    blank: str,
) -> None:
    await asyncio.to_thread(migrate, blank, "0005")
    with pytest.raises(RuntimeError, match="migrate once as a superuser or as postgres"):
        await asyncio.to_thread(migrate, with_user(blank, OWNER_ROLE))
    assert "events" in await not_the_owners(blank)  # nothing half done


_PROBE = '''"""A later migration (test only).

Revision ID: 9999
Revises: {head}
"""

from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE probe (id int)")


def downgrade() -> None:
    op.execute("DROP TABLE probe")
'''


@pytest.mark.parametrize("split", [False, True], ids=["one-run", "two-runs"])
async def test_migrations_after_0006_create_what_the_owner_owns(
    blank: str, tmp_path: Path, split: bool
) -> None:
    # a superuser (or an administrator granted the owner role) migrates: from 0006 on, the
    # migrations act as the owner, whether 0006 ran in an earlier run or in the same one
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(app.store.migrate.__file__).parent / "migrations", scripts)
    (scripts / "versions" / "9999_probe.py").write_text(_PROBE.format(head=head_revision()))
    config = alembic_config(blank)
    config.set_main_option("script_location", str(scripts))
    if split:
        await asyncio.to_thread(migrate, blank)
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await not_the_owners(blank) == []
    conn = await asyncpg.connect(blank)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "9999"
        assert (
            await conn.fetchval(
                "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'probe'::regclass"
            )
            == OWNER_ROLE
        )
    finally:
        await conn.close()
