"""The migrations and the SQLAlchemy Core schema describe the same database.

The comparison is the one `alembic revision --autogenerate` makes (`migrate.AUTOGENERATE`):
a change to the schema module without a migration leaves a difference, which fails here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.store import migrate, sql_files
from app.store.migrate import AUTOGENERATE, sqlalchemy_url
from app.store.schema import metadata
from tests.conftest import superuser_url


async def _on_database(database_url: str, compare: Callable[[Connection], Any]) -> Any:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def _differences(schema: sa.MetaData, **options: Any) -> Callable[[Connection], list[Any]]:
    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={**AUTOGENERATE, **options})
        return list(compare_metadata(context, schema))

    return compare


def _check_constraints(schema: sa.MetaData) -> Callable[[Connection], dict[str, set[str]]]:
    """The check constraints, by name, that only one of the database and the schema module
    has, by table (autogenerate does not compare them)."""

    def compare(conn: Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        found = {}
        existing = set(inspector.get_table_names())
        for table in schema.sorted_tables:
            if table.name not in existing:
                continue  # a table missing altogether is autogenerate's to report
            named = {c["name"] for c in inspector.get_check_constraints(table.name)}
            modelled = {str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            if named != modelled:
                found[table.name] = named ^ modelled
        return found

    return compare


async def test_schema_module_matches_the_migrated_database(database_url: str) -> None:
    assert await _on_database(database_url, _differences(metadata)) == []
    assert await _on_database(database_url, _check_constraints(metadata)) == {}


def _with_a_column(schema: sa.MetaData) -> None:
    schema.tables["versions"].append_column(sa.Column("stage", sa.Text))


def _with_a_table(schema: sa.MetaData) -> None:
    sa.Table("approval_requests", schema, sa.Column("id", sa.BigInteger, primary_key=True))


def _with_an_index(schema: sa.MetaData) -> None:
    sa.Index("jobs_status_idx", schema.tables["jobs"].c.status)


def _with_a_type(schema: sa.MetaData) -> None:
    schema.tables["policies"].c.policy.type = pg.JSONB()


def _nullable(schema: sa.MetaData) -> None:
    schema.tables["tokens"].c.role.nullable = True


def _with_a_default(schema: sa.MetaData) -> None:
    schema.tables["jobs"].c.attempts.server_default = sa.DefaultClause("0")


def _with_a_check(schema: sa.MetaData) -> None:
    schema.tables["jobs"].append_constraint(sa.CheckConstraint("attempts >= 0", name="tries"))


@pytest.mark.parametrize(
    "change",
    [
        _with_a_column,
        _with_a_table,
        _with_an_index,
        _with_a_type,
        _nullable,
        _with_a_default,
        _with_a_check,
    ],
)
async def test_a_schema_change_without_a_migration_is_a_difference(
    database_url: str, change: Callable[[sa.MetaData], None]
) -> None:
    changed = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    change(changed)
    differences = await _on_database(database_url, _differences(changed))
    checks = await _on_database(database_url, _check_constraints(changed))
    assert differences or checks


async def test_autogenerate_leaves_alone_what_the_sql_files_own(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def create_a_partition(conn: Connection) -> None:
        conn.execute(sa.text("CREATE TABLE predictions_2026_12 (id bigint)"))
        conn.commit()

    await _on_database(superuser_url(database_url), create_a_partition)
    removed = await _on_database(database_url, _differences(metadata))
    assert [d[0] for d in removed] == ["remove_table"]
    monkeypatch.setattr(migrate, "SQL_OWNED", frozenset({"predictions_2026_12"}))
    assert await _on_database(database_url, _differences(metadata)) == []


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("SELECT 1;\nSELECT 2;", ["SELECT 1", "SELECT 2"]),
        # a body's semicolons, a string's and a comment's end no statement
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN RETURN 1; END $$;\n"
            "-- it's; a comment\nSELECT ';' AS x;",
            [
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN RETURN 1; END $$",
                "-- it's; a comment\nSELECT ';' AS x",
            ],
        ),
        (
            "DO $body$ BEGIN PERFORM 'a$$b;'; END $body$;\n-- nothing after\n",
            ["DO $body$ BEGIN PERFORM 'a$$b;'; END $body$"],
        ),
        ("-- only a comment\n", []),
    ],
)
def test_sql_files_split_into_statements(script: str, expected: list[str]) -> None:
    assert sql_files.statements(script) == expected


def test_every_sql_file_is_run_by_its_revision() -> None:
    """A file no migration names would be SQL a newcomer reads but no database has."""
    versions = sql_files.SQL_FOLDER.parent / "versions"
    sources = {path.name[:4]: path.read_text() for path in versions.glob("*.py")}
    for file in sql_files.SQL_FOLDER.glob("*/*.sql"):
        revision = file.parent.name
        assert f'"{file.stem}"' in sources[revision], file
        assert sql_files.read(revision, file.stem)


def test_released_sql_files_are_never_edited() -> None:
    """Each migration must go on producing what it did on the databases it already ran on:
    a change to a function is a new revision's file (`sql/NNNN/append.sql`), never an edit.
    A new revision's files are added to `sql/SHA256SUMS` (`sha256sum */*.sql`) with it."""
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (sql_files.SQL_FOLDER / "SHA256SUMS").read_text().splitlines()
    )
    found = {
        str(path.relative_to(sql_files.SQL_FOLDER)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(sql_files.SQL_FOLDER.glob("*/*.sql"))
    }
    assert found == listed
