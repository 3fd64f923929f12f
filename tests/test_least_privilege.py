"""The server runs as the application role, says loudly when it does not, and an operator
sets the roles up with `model-ledger db roles` and migrates as the owner."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from click.testing import CliRunner

from app.cli import main
from app.main import create_app
from app.resources import open_resources
from app.settings import Settings
from app.store.migrate import head_revision, migrate
from app.store.roles import APP_ROLE, OWNER_ROLE
from tests.conftest import running, superuser_url, with_user
from tests.store.test_roles import not_the_owners

_UNSET = dict.fromkeys(
    (
        "MODEL_LEDGER_DATABASE_URL",
        "MODEL_LEDGER_MIGRATION_DATABASE_URL",
        "MODEL_LEDGER_REDIS_URL",
        "MODEL_LEDGER_DB_OWNER_PASSWORD",
        "MODEL_LEDGER_DB_APP_PASSWORD",
        "MODEL_LEDGER_DATABASE_PASSWORD_FILE",
        "MODEL_LEDGER_MIGRATION_DATABASE_PASSWORD_FILE",
        "MODEL_LEDGER_DB_OWNER_PASSWORD_FILE",
        "MODEL_LEDGER_DB_APP_PASSWORD_FILE",
    ),
    "",
)


def run(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=_UNSET | env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


async def test_ready_reports_the_application_role(client: httpx.AsyncClient) -> None:
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["database_role"] == {
        "name": APP_ROLE,
        "least_privilege": True,
        "problems": [],
    }


async def test_a_server_connected_as_a_superuser_says_so_loudly(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    as_superuser = msgspec.structs.replace(settings, database_url=superuser_url(database_url))
    # on the logger itself: Litestar configures the root logger's handlers when it starts
    logger = logging.getLogger("model_ledger")
    logger.addHandler(caplog.handler)
    try:
        async with running(create_app(as_superuser)) as application:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                ready = await http.get("/ready")
    finally:
        logger.removeHandler(caplog.handler)
    assert ready.status_code == 200  # reported, not failed: the log still records correctly
    role = ready.json()["database_role"]
    assert not role["least_privilege"] and role["problems"][0].startswith("superuser")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("could alter the append-only log" in r.getMessage() for r in errors)


async def test_a_server_required_to_be_least_privileged_refuses_a_superuser(
    settings: Settings, database_url: str
) -> None:
    strict = msgspec.structs.replace(settings, require_least_privilege=True)
    async with open_resources(strict) as resources:  # the application role: starts
        assert (await resources.database_role.report()).least_privilege
    as_superuser = msgspec.structs.replace(strict, database_url=superuser_url(database_url))
    with pytest.raises(RuntimeError, match="superuser"):
        async with open_resources(as_superuser):
            pass


async def test_a_command_on_a_schema_behind_says_to_migrate(
    blank_database: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, blank_database, "0005")  # what an earlier version left
    env = {
        "MODEL_LEDGER_DATABASE_URL": with_user(blank_database, APP_ROLE),
        "MODEL_LEDGER_REDIS_URL": redis_url,
        "MODEL_LEDGER_HOME": str(tmp_path / "home"),
    }
    args = ("tokens", "create", "--role", "ci", "--subject", "pipeline")
    refused = await asyncio.to_thread(run, env, *args, code=1)
    # the application role may not even read the revision of a schema from before 0006
    assert "at revision unknown" in refused and "`model-ledger migrate`" in refused
    # with the migration URL set, the command migrates first (as serve, worker, scorer do)
    env["MODEL_LEDGER_MIGRATION_DATABASE_URL"] = blank_database
    token = await asyncio.to_thread(run, env, *args)
    assert token.startswith("mlt_")
    assert await not_the_owners(blank_database) == []


async def test_an_operator_sets_up_roles_and_the_owner_migrates_a_fresh_database(
    blank_database: str, redis_url: str, tmp_path: Path
) -> None:
    # a managed server: the superuser runs what `db roles` prints (twice: idempotent) ...
    sql = await asyncio.to_thread(run, {}, "db", "roles")
    assert f"CREATE ROLE {OWNER_ROLE} LOGIN" in sql and "PASSWORD" not in sql
    conn = await asyncpg.connect(blank_database)
    try:
        await conn.execute(sql)
        await conn.execute(sql)
    finally:
        await conn.close()
    # ... the owner migrates (only its URL set) ...
    owner = {"MODEL_LEDGER_MIGRATION_DATABASE_URL": with_user(blank_database, OWNER_ROLE)}
    assert "latest" in await asyncio.to_thread(run, owner, "migrate")
    assert await not_the_owners(blank_database) == []
    # console sessions: the application role reads and writes rows, nothing more
    conn = await asyncpg.connect(blank_database)
    try:
        granted = {
            privilege: await conn.fetchval(
                "SELECT has_table_privilege($1, 'console_sessions', $2)", APP_ROLE, privilege
            )
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES")
        }
    finally:
        await conn.close()
    assert granted == {
        "SELECT": True,
        "INSERT": True,
        "UPDATE": True,
        "DELETE": True,
        "TRUNCATE": False,
        "REFERENCES": False,
    }
    # ... and the application role runs everything else
    app = {
        "MODEL_LEDGER_DATABASE_URL": with_user(blank_database, APP_ROLE),
        "MODEL_LEDGER_REDIS_URL": redis_url,
        "MODEL_LEDGER_HOME": str(tmp_path / "home"),
    }
    args = ("tokens", "create", "--role", "ci", "--subject", "pipeline")
    assert (await asyncio.to_thread(run, app, *args)).startswith("mlt_")
    assert '"ok": true' in await asyncio.to_thread(run, app, "verify")


async def test_db_roles_apply_is_repeatable(blank_database: str) -> None:
    env = {"MODEL_LEDGER_MIGRATION_DATABASE_URL": blank_database}
    for _ in range(2):
        assert "set up" in await asyncio.to_thread(run, env, "db", "roles", "--apply")
    conn = await asyncpg.connect(blank_database)
    try:
        assert await conn.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", OWNER_ROLE
        )
        assert not await conn.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", APP_ROLE
        )
    finally:
        await conn.close()


def test_db_roles_prints_passwords_as_literals() -> None:
    sql = run({"MODEL_LEDGER_DB_APP_PASSWORD": "it's"}, "db", "roles", "--owner-password", "o")
    assert f"ALTER ROLE {APP_ROLE} PASSWORD 'it''s';" in sql
    assert f"ALTER ROLE {OWNER_ROLE} PASSWORD 'o';" in sql


def test_db_roles_reads_passwords_from_files(tmp_path: Path) -> None:
    # compose secrets: one file per password, often ending in a newline
    (tmp_path / "owner").write_text("own'er\n")
    (tmp_path / "app").write_text("app\n")
    env = {"MODEL_LEDGER_DB_APP_PASSWORD_FILE": str(tmp_path / "app")}
    sql = run(env, "db", "roles", "--owner-password-file", str(tmp_path / "owner"))
    assert f"ALTER ROLE {APP_ROLE} PASSWORD 'app';" in sql
    assert f"ALTER ROLE {OWNER_ROLE} PASSWORD 'own''er';" in sql
    both = ("--app-password", "inline", "--app-password-file", str(tmp_path / "app"))
    assert "choose one" in run({}, "db", "roles", *both, code=2)


def test_the_head_revision_is_0006_or_later() -> None:
    assert head_revision() >= "0006"
