"""The database roles: an owner of the schema, and the application's login role.

The application connects as `APP_ROLE`: it may read the log and append to it, and write the
views, nothing more. It owns nothing, so it cannot disable the log's triggers; it is no
superuser, so it cannot set `session_replication_role`. Migrations run as `OWNER_ROLE`.
Roles belong to the PostgreSQL server, not to a database: every ledger on one server shares
them, each database granting them its own privileges.
"""

from __future__ import annotations

import asyncpg
import msgspec

OWNER_ROLE = "model_ledger_owner"
APP_ROLE = "model_ledger_app"
# the tables whose rows must never change once written
LOG_TABLES = ("events", "checkpoints", "idempotency_keys")
_CHANGES = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER")
_ATTRIBUTES = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"

# Creating a role that a concurrent session creates too fails with unique_violation (or
# duplicate_object); changing one that another session changes at the same moment fails
# with "tuple concurrently updated" (internal_error). Either way the other did the work.
_CREATE = """DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {role} LOGIN {attributes};
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""
# model_ledger_app exists NOLOGIN where migration 0001 created it
_LOGIN = """DO $$
BEGIN
  IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}') THEN
    ALTER ROLE {role} LOGIN;
  END IF;
EXCEPTION WHEN internal_error THEN NULL;
END $$"""
# What the owner needs in the ledger's database to create a fresh schema (a later migration
# 0006 gives it too, when run by a superuser or the schema's owner).
_DATABASE = """DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO {app}, {owner}', current_database());
  IF NOT has_schema_privilege('{owner}', current_schema(), 'CREATE') THEN
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO {owner}', current_schema());
  END IF;
  IF NOT has_schema_privilege('{app}', current_schema(), 'USAGE') THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {app}', current_schema());
  END IF;
EXCEPTION WHEN internal_error THEN NULL;
END $$"""


def quote_literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings, the default since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def role_statements() -> list[str]:
    """Create both roles if missing, with LOGIN; idempotent and safe to run concurrently.

    Needs a superuser, or CREATEROLE (then, from PostgreSQL 16, ADMIN on existing roles).
    """
    return [
        _CREATE.format(role=role, attributes=_ATTRIBUTES) for role in (OWNER_ROLE, APP_ROLE)
    ] + [_LOGIN.format(role=role) for role in (OWNER_ROLE, APP_ROLE)]


def setup_statements(
    *, owner_password: str | None = None, app_password: str | None = None
) -> list[str]:
    """Everything a superuser runs once in the ledger's database before `migrate`."""
    statements = role_statements()
    for role, password in ((OWNER_ROLE, owner_password), (APP_ROLE, app_password)):
        if password:
            statements.append(f"ALTER ROLE {role} PASSWORD {quote_literal(password)}")
    statements.append(_DATABASE.format(app=APP_ROLE, owner=OWNER_ROLE))
    return statements


async def ensure_roles(conn: asyncpg.Connection) -> None:
    """Create both roles if missing (as a superuser or a role with CREATEROLE)."""
    for statement in role_statements():
        await conn.execute(statement)


class RoleReport(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the role the application connects as could change the log."""

    name: str
    least_privilege: bool
    problems: list[str]


_INSPECT = """
SELECT current_user AS name, r.rolsuper, r.rolreplication, r.rolbypassrls, r.rolcreaterole,
  array(SELECT t.name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n)
          JOIN pg_class c ON c.oid = to_regclass(t.name)
         WHERE pg_has_role(current_user, c.relowner, 'MEMBER') ORDER BY t.n) AS owned,
  array(SELECT p.change || ' on ' || t.name
          FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n),
               unnest($2::text[]) WITH ORDINALITY AS p(change, m)
         WHERE to_regclass(t.name) IS NOT NULL AND has_table_privilege(t.name, p.change)
         ORDER BY t.n, p.m) AS may,
  {replica} AS replica
FROM pg_roles r WHERE r.rolname = current_user
"""
# GRANT SET ON PARAMETER (PostgreSQL 15) can give it to a role that is no superuser
_REPLICA_15 = "has_parameter_privilege('session_replication_role', 'SET')"


async def inspect_role(conn: asyncpg.Connection | asyncpg.Pool) -> RoleReport:
    """What the connected role could do to the log beyond reading and appending."""
    version = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    sql = _INSPECT.format(replica=_REPLICA_15 if version >= 150000 else "false")
    row = await conn.fetchrow(sql, LOG_TABLES, _CHANGES)
    assert row is not None
    problems = []
    if row["rolsuper"]:
        problems.append("superuser: may disable the log's triggers or replicate around them")
    else:
        if row["owned"]:
            problems.append(
                "owns (or may become the owner of) "
                + ", ".join(row["owned"])
                + ": may disable their triggers"
            )
        if row["may"]:
            problems.append("may " + ", ".join(row["may"]))
        if row["replica"]:
            problems.append("may set session_replication_role (triggers would not fire)")
        if row["rolcreaterole"]:
            problems.append("has CREATEROLE: may grant itself the owner's role")
    if row["rolreplication"]:
        problems.append("has REPLICATION")
    if row["rolbypassrls"]:
        problems.append("has BYPASSRLS")
    return RoleReport(name=row["name"], least_privilege=not problems, problems=problems)


class RoleCheck:
    """The connected role's report, inspected on first use (again if that failed)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._report: RoleReport | None = None

    async def report(self) -> RoleReport:
        """The report, inspecting the role if it was not yet."""
        if self._report is None:
            self._report = await inspect_role(self._pool)
        return self._report


def warning(report: RoleReport) -> str:
    """What an operator is told when the application's role could alter the log."""
    return (
        f"the database role {report.name!r} could alter the append-only log: "
        + "; ".join(report.problems)
        + f". Connect as {APP_ROLE} (MODEL_LEDGER_DATABASE_URL) and migrate as {OWNER_ROLE} "
        "(MODEL_LEDGER_MIGRATION_DATABASE_URL); `model-ledger db roles` prints the setup"
    )
