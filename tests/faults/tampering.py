"""What a PostgreSQL superuser does to a stopped server's log, one copy of it per case, and
where the trust model (docs/trust-model.md) says verification must find each change."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from app.store.roles import OWNER_ROLE
from tests.faults.stack import DATABASE
from tests.store.test_tampering import rehash_from

# how a copy is verified: the database alone, with the witness file, with a pinned head
DATABASE_ALONE, WITNESS, PINNED = "database alone", "witness file", "--expect-head"


@dataclass(frozen=True)
class Layout:
    """The stopped log: its length, its checkpoints (sequence, position) and the events the
    cases change."""

    head: int
    checkpoints: tuple[tuple[int, int], ...]
    approval: int
    rejection: int
    promotion: int

    def signed_at_or_after(self, position: int) -> tuple[int, int]:
        """The first checkpoint covering `position`."""
        return next(c for c in self.checkpoints if c[1] >= position)


@dataclass(frozen=True)
class Expect:
    """One verification of a tampered copy and what it must report: the first broken
    position and words of the problem, or (`detectable` false) an ok report that says
    what it could not check."""

    how: str
    position: int | None
    says: str
    detectable: bool = True


Tamper = Callable[[asyncpg.Connection, Layout], Awaitable[list[Expect]]]


async def read_layout(conn: asyncpg.Connection) -> Layout:
    head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
    rows = await conn.fetch(
        "SELECT sequence, position FROM checkpoints WHERE sequence IS NOT NULL ORDER BY sequence"
    )

    async def first(event_type: str) -> int:
        found = await conn.fetchval("SELECT min(position) FROM events WHERE type = $1", event_type)
        assert found is not None, f"the story wrote no {event_type}"
        return int(found)

    return Layout(
        head=head,
        checkpoints=tuple((r["sequence"], r["position"]) for r in rows),
        approval=await first("version.approved"),
        rejection=await first("version.rejected"),
        promotion=await first("deployment.changed"),
    )


@contextlib.asynccontextmanager
async def cloned(superuser_url: str, clone: str) -> AsyncIterator[None]:
    """`clone` created from the stopped ledger (no session may be connected to it)."""
    conn = await asyncpg.connect(superuser_url)
    try:
        await conn.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{DATABASE}" OWNER {OWNER_ROLE}')
    finally:
        await conn.close()
    yield


@contextlib.asynccontextmanager
async def forced(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The superuser's session with every trigger off (replication role)."""
    await conn.execute("SET session_replication_role = replica")
    try:
        yield conn
    finally:
        await conn.execute("SET session_replication_role = DEFAULT")


async def _replace(
    conn: asyncpg.Connection, column: str, position: int, old: str, new: str
) -> None:
    before = await conn.fetchval(f"SELECT {column}::text FROM events WHERE position = $1", position)
    assert old in before, (position, column, before)
    await conn.execute(
        f"UPDATE events SET {column} = replace({column}::text, $2, $3)::json WHERE position = $1",
        position,
        old,
        new,
    )


async def _rename_approver(conn: asyncpg.Connection, position: int) -> None:
    approver = await conn.fetchval(
        "SELECT data->>'approver' FROM events WHERE position = $1", position
    )
    await _replace(conn, "data", position, f'"{approver}"', '"someone-else"')


async def middle_edit(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """Who approved a version, changed."""
    async with forced(conn):
        await _rename_approver(conn, layout.approval)
    return [Expect(DATABASE_ALONE, layout.approval, "hash")]


async def rehashed_edit(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """The same change, every later hash recomputed: the chain is whole again."""
    async with forced(conn):
        await _rename_approver(conn, layout.approval)
        await rehash_from(conn, layout.approval)
    sequence, position = layout.signed_at_or_after(layout.approval)
    return [Expect(DATABASE_ALONE, position, f"checkpoint #{sequence}")]


async def deleted_row(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """A rejection removed from the record."""
    async with forced(conn):
        await conn.execute("DELETE FROM events WHERE position = $1", layout.rejection)
    return [Expect(DATABASE_ALONE, layout.rejection, "missing position")]


_COLUMNS = "stream, version, event_id, type, data, meta, recorded_at, prev_hash, hash"


async def swapped_rows(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """A promotion moved before the event that preceded it."""
    first, second = layout.promotion - 1, layout.promotion
    async with forced(conn):
        rows = {
            row["position"]: row
            for row in await conn.fetch(
                f"SELECT position, {_COLUMNS} FROM events WHERE position IN ($1, $2)", first, second
            )
        }
        # out of the way first: (stream, version) and event_id are unique
        await conn.execute(
            "UPDATE events SET event_id = gen_random_uuid(), version = -version "
            "WHERE position IN ($1, $2)",
            first,
            second,
        )
        for position, other in ((first, second), (second, first)):
            await conn.execute(
                f"UPDATE events SET ({_COLUMNS}) = ($2, $3, $4, $5, $6::text::json, "
                "$7::text::json, $8, $9, $10) WHERE position = $1",
                position,
                *[rows[other][name] for name in _COLUMNS.split(", ")],
            )
    return [Expect(DATABASE_ALONE, first, "")]


async def tail_cut(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """The newest signed events deleted, their checkpoint left in place."""
    newest = layout.checkpoints[-1][1]
    cut = layout.checkpoints[-2][1] + 1  # keep one event past the previous checkpoint
    assert cut < newest
    async with forced(conn):
        await conn.execute("DELETE FROM events WHERE position > $1", cut)
    return [
        Expect(DATABASE_ALONE, cut + 1, "newest events were deleted"),
        Expect(WITNESS, cut + 1, "newest events were deleted"),
    ]


async def _cut_with_checkpoints(conn: asyncpg.Connection, layout: Layout, dropped: int) -> int:
    """Events past the checkpoint before the `dropped` newest ones deleted, with those
    checkpoints: what remains is a shorter, consistent, signed log. Its new end."""
    sequence, end = layout.checkpoints[-1 - dropped]
    async with forced(conn):
        await conn.execute("DELETE FROM events WHERE position > $1", end)
        await conn.execute("DELETE FROM checkpoints WHERE sequence > $1", sequence)
    return end


async def tail_cut_with_checkpoint(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """The newest events deleted together with the newest checkpoint."""
    end = await _cut_with_checkpoints(conn, layout, 1)
    return [
        Expect(WITNESS, end + 1, "deleted together with their checkpoints"),
        Expect(PINNED, end + 1, "shorter than the expected head"),
        # honestly not: the report must say what it could not check
        Expect(DATABASE_ALONE, None, "no witness", detectable=False),
    ]


async def tail_cut_with_checkpoints(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """The same, two checkpoints deep."""
    end = await _cut_with_checkpoints(conn, layout, 2)
    return [Expect(WITNESS, end + 1, "deleted together with their checkpoints")]


async def checkpoint_gap(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """A checkpoint in the middle of the chain deleted."""
    sequence = layout.checkpoints[1][0]
    async with forced(conn):
        await conn.execute("DELETE FROM checkpoints WHERE sequence = $1", sequence)
    return [Expect(DATABASE_ALONE, None, f"checkpoint #{sequence} is missing")]


async def trigger_disabled_update(conn: asyncpg.Connection, layout: Layout) -> list[Expect]:
    """The log's trigger disabled (as its owner could), who promoted changed, re-enabled."""
    actor = await conn.fetchval(
        "SELECT meta->>'actor' FROM events WHERE position = $1", layout.promotion
    )
    await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await _replace(conn, "meta", layout.promotion, f'"{actor}"', '"someone-else"')
    await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    return [Expect(DATABASE_ALONE, layout.promotion, "hash")]


async def untouched(_: asyncpg.Connection, __: Layout) -> list[Expect]:
    """No change: every verification must pass (no false alarm)."""
    return [
        Expect(WITNESS, None, "", detectable=False),
        Expect(PINNED, None, "", detectable=False),
    ]


CASES: dict[str, Tamper] = {
    "untouched": untouched,
    "middle edit": middle_edit,
    "edit, chain recomputed": rehashed_edit,
    "middle row deleted": deleted_row,
    "rows swapped": swapped_rows,
    "tail deleted, checkpoint left": tail_cut,
    "tail deleted with newest checkpoint": tail_cut_with_checkpoint,
    "tail deleted with 2 newest checkpoints": tail_cut_with_checkpoints,
    "middle checkpoint deleted": checkpoint_gap,
    "trigger disabled, then update": trigger_disabled_update,
}
