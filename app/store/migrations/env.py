"""Alembic environment: runs migrations over asyncpg, one migrator at a time."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.store.migrate import AUTOGENERATE
from app.store.roles import OWNER_ROLE
from app.store.schema import metadata

# Replicas starting together must not race through the same migration.
_MIGRATION_LOCK = 7_244_502


# Once the schema is the owner's (revision 0006 on), a migrator that may become the owner
# (a superuser, an administrator granted the role) migrates as the owner, so what it
# creates is the owner's too. Before, it runs as itself: 0006 hands the schema over, which
# only a superuser or the schema's current owner may do.
_SCHEMA_OWNER = sa.text(
    """SELECT pg_get_userbyid(c.relowner) AS owner, current_user AS migrator,
              pg_has_role(current_user, c.relowner, 'MEMBER') AS may_become
         FROM pg_class c WHERE c.oid = to_regclass('alembic_version')"""
)


def _act_as_owner(connection: Connection) -> None:
    schema = connection.execute(_SCHEMA_OWNER).one_or_none()
    if schema is None:
        return  # a database never migrated: created by whoever migrates, handed over by 0006
    if schema.owner == OWNER_ROLE:
        if schema.migrator != OWNER_ROLE and schema.may_become:
            connection.execute(sa.text(f"SET LOCAL ROLE {OWNER_ROLE}"))
    elif not schema.may_become:
        raise RuntimeError(
            f"the schema belongs to {schema.owner} (migrated before revision 0006), which "
            f"{schema.migrator} may not act as: migrate once as a superuser or as "
            f"{schema.owner} to hand it to {OWNER_ROLE}"
        )


def _run(connection: Connection) -> None:
    connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
    _act_as_owner(connection)
    # new revisions are generated from the schema module: `scripts/new-migration`
    context.configure(connection=connection, target_metadata=metadata, **AUTOGENERATE)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_run_online())
