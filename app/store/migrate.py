"""Applying the Alembic migrations of the event store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.store.schema import SQL_OWNED

_SCRIPTS = Path(__file__).parent / "migrations"


def include_object(
    item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Whether autogenerate compares a database object with the schema module: not when the
    module leaves it to a migration's SQL files (`schema.SQL_OWNED`). Functions, triggers and
    grants need no entry: autogenerate does not look at them."""
    if not reflected or compare_to is not None:
        return True
    table = name if type_ == "table" else getattr(getattr(item, "table", None), "name", None)
    return table not in SQL_OWNED


# What `alembic revision --autogenerate` (env.py) and the test that the schema module and the
# migrated database agree both compare: column types and server defaults too.
AUTOGENERATE: dict[str, Any] = {
    "compare_type": True,
    "compare_server_default": True,
    "include_object": include_object,
}


def sqlalchemy_url(database_url: str) -> str:
    """The asyncpg-dialect SQLAlchemy URL for a `postgresql://` URL."""
    scheme, _, rest = database_url.partition("://")
    if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
        raise ValueError(f"not a PostgreSQL URL: {scheme}://")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for this database, with no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    # ConfigParser interpolation would eat the '%' of percent-encoded URLs.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`. Blocking: call it from a thread in async code."""
    command.upgrade(alembic_config(database_url), revision)


class SchemaNotCurrent(Exception):
    """The database's schema is not the one this version of the code needs."""


def head_revision() -> str:
    """The newest revision of the migrations shipped with this code."""
    head = ScriptDirectory(str(_SCRIPTS)).get_current_head()
    assert head is not None
    return head


async def current_revision(database_url: str) -> str | None:
    """The database's schema revision: None if never migrated, "unknown" if not readable
    (a schema migrated before revision 0006 grants the application role nothing on it)."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('alembic_version') IS NULL"):
            return None
        if not await conn.fetchval("SELECT has_table_privilege('alembic_version', 'SELECT')"):
            return "unknown"
        revision: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
        return revision
    finally:
        await conn.close()


async def ensure_current(database_url: str) -> None:
    """Raise `SchemaNotCurrent`, saying what to run, unless the schema is at the head."""
    head, found = head_revision(), await current_revision(database_url)
    if found != head:
        raised = "never migrated" if found is None else f"at revision {found}"
        raise SchemaNotCurrent(
            f"the database schema is {raised}; this version needs {head}. Run "
            "`model-ledger migrate` with MODEL_LEDGER_MIGRATION_DATABASE_URL set to the "
            "owner role's URL, or a superuser's to upgrade a schema from before 0006 (set it "
            "for this command to migrate at startup)"
        )
