"""The governance projection's row types are their tables: a column added to a table (or a
table to the projection) without its row fails here, before any statement is built.

`tests/store/test_migrations.py` checks the tables against the migrated database.
"""

from __future__ import annotations

import types
import typing

import msgspec
import pytest
import sqlalchemy as sa

from app.store.projections.governance import GovernanceProjection
from app.store.projections.governance_rows import ROW_TYPES, Row

# the folded states and their snapshots: written whole by the projection, not as rows
STATE_TABLES = {"model_states", "model_snapshots"}

by_table = pytest.mark.parametrize("row", ROW_TYPES, ids=lambda row: row.table.name)


def _nullable(annotation: object) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def _kind(annotation: object) -> object:
    """The annotation's type, `None` left out."""
    (kind,) = [t for t in typing.get_args(annotation) if t is not type(None)] or [annotation]
    return kind


@by_table
def test_a_rows_fields_are_its_tables_columns_in_order(row: type[Row]) -> None:
    # the order COPY and the unnest upserts list the columns in
    assert row.__struct_fields__ == tuple(c.name for c in row.table.columns)


@by_table
def test_a_field_takes_none_where_its_column_does(row: type[Row]) -> None:
    fields = {f.name: f.type for f in msgspec.structs.fields(row)}
    assert {c.name: c.nullable for c in row.table.columns} == {
        name: _nullable(annotation) for name, annotation in fields.items()
    }


@by_table
def test_a_field_has_its_columns_python_type(row: type[Row]) -> None:
    fields = {f.name: f.type for f in msgspec.structs.fields(row)}
    # a JSON column takes the JSON text
    assert {name: _kind(annotation) for name, annotation in fields.items()} == {
        c.name: str if isinstance(c.type, sa.JSON) else c.type.python_type
        for c in row.table.columns
    }


@by_table
def test_an_upsert_overwrites_only_columns_outside_the_key(row: type[Row]) -> None:
    keys = {c.name for c in row.table.primary_key.columns}
    assert set(row.updated) <= set(row.__struct_fields__) - keys
    assert len(set(row.updated)) == len(row.updated)


def test_every_table_of_the_projection_but_the_states_has_a_row_type() -> None:
    tables = [row.table.name for row in ROW_TYPES]
    assert sorted(tables) == sorted(set(GovernanceProjection.tables) - STATE_TABLES)
