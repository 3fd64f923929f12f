"""Runs projections: views folded from the log, each with a checkpoint.

A projection's rows and its checkpoint are written in one transaction, so a view never
misses or double-applies an event. `catch_up_to(position)` after an append gives a client
read-your-writes: the view has seen its event before the response is sent. The checkpoint
row is locked (`FOR UPDATE`), so several processes may run the same projector safely.

A transaction reads the log in pages and applies up to `_TRANSACTION_EVENTS` events, so a
projection that keeps state between pages (`Buffering`) writes it once per transaction, not
once per page: what a catch-up or a rebuild of a long log costs is mostly those writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import asyncpg

from app.store import codec
from app.store.codec import RecordedEvent
from app.store.events import EventStore

_PAGE = 5_000
_TRANSACTION_EVENTS = 1_000_000


class Projection(Protocol):
    """A view of the log: which event types it reads, how it applies and resets them."""

    @property
    def name(self) -> str:
        """Stable name; keys the projection's checkpoint."""

    @property
    def types(self) -> Sequence[str]:
        """The event types it reads."""

    @property
    def tables(self) -> Sequence[str]:
        """The tables it owns (emptied by a rebuild)."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply events (in position order) inside the caller's transaction."""


@runtime_checkable
class Buffering(Protocol):
    """A projection that keeps work between the pages of one transaction."""

    def begin(self) -> None:
        """A transaction starts: forget what an unfinished one left pending."""

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write what `apply` left pending; called once before each commit."""

    async def settle(self) -> None:
        """Wait for writes `apply` left in flight on the connection (also when failing)."""


_PAGE_SQL = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed fragments
    "WHERE position > $1 AND position <= $2 AND type = ANY($3) ORDER BY position LIMIT $4"
)


class Projector:
    """Keeps every projection caught up with the log."""

    def __init__(self, store: EventStore, projections: Sequence[Projection]) -> None:
        self._store = store
        self._projections = list(projections)
        self._lock = asyncio.Lock()
        self._caught_up_to = 0
        # seconds each projection took in the latest catch-up or rebuild (for benches, logs)
        self.seconds: dict[str, float] = {}

    @property
    def projections(self) -> list[Projection]:
        return list(self._projections)

    async def catch_up_to(self, position: int) -> None:
        """Return once every projection has applied the log up to `position`."""
        if self._caught_up_to >= position:
            return
        async with self._lock:
            if self._caught_up_to >= position:
                return
            await self._catch_up()

    async def catch_up(self) -> int:
        """Apply everything committed so far; returns the position reached."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        head, _ = await self._store.head()

        async def advance(projection: Projection) -> None:
            start = time.perf_counter()
            await self._advance(projection, head)
            self.seconds[projection.name] = time.perf_counter() - start

        # Projections are independent: while one folds in Python, the database writes or
        # reads for another. Each holds a connection for its transaction and borrows one
        # for each page it reads ahead, so a pool with no connection to spare runs them
        # one by one.
        # A catch-up of more than a page (a rebuild, a start after downtime) runs with the
        # cyclic GC paused throughout, awaits included: the projector makes no reference
        # cycles, and what other tasks of the process make meanwhile is collected after.
        long_run = head - self._caught_up_to > _PAGE
        with paused_gc() if long_run else contextlib.nullcontext():
            if self._store.pool.get_max_size() > len(self._projections):
                await asyncio.gather(*(advance(p) for p in self._projections))
            else:
                for projection in self._projections:
                    await advance(projection)
        self._caught_up_to = max(self._caught_up_to, head)
        return head

    async def _advance(self, projection: Projection, head: int) -> None:
        pool = self._store.pool
        buffering = projection if isinstance(projection, Buffering) else None
        reader = _ReadAhead(pool, list(projection.types), head)
        done = False
        try:
            while not done:
                async with pool.acquire() as conn, conn.transaction():
                    checkpoint = await lock_checkpoint(conn, projection.name)
                    if checkpoint >= head:
                        return
                    if buffering is not None:
                        buffering.begin()
                    try:
                        reached, done = await _apply_pages(conn, projection, reader, checkpoint)
                    except BaseException:
                        if buffering is not None:  # its writes end before the rollback
                            with contextlib.suppress(BaseException):
                                await buffering.settle()
                        raise
                    if buffering is not None:
                        await buffering.flush(conn)
                    await conn.execute(
                        "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                        projection.name,
                        reached,
                    )
        finally:
            await reader.close()

    async def rebuild(self) -> int:
        """Empty every view and replay the whole log into it; returns the position reached.

        The views are emptied with TRUNCATE, not DELETE: the replay's inserts and upserts
        would otherwise step over a dead row for every live one until a vacuum.
        """
        async with self._lock:
            async with self._store.pool.acquire() as conn, conn.transaction():
                for projection in self._projections:
                    await lock_checkpoint(conn, projection.name)
                    tables = ", ".join(projection.tables)
                    await conn.execute(f"TRUNCATE {tables}")
                    await conn.execute(
                        "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
                        projection.name,
                    )
            self._caught_up_to = 0
            return await self._catch_up()


async def _apply_pages(
    conn: asyncpg.Connection, projection: Projection, reader: _ReadAhead, after: int
) -> tuple[int, bool]:
    """Apply up to `_TRANSACTION_EVENTS` events after `after`: (position reached, at head)."""
    reached, applied, done = after, 0, False
    # a page is read and decoded while the one before it is applied
    applying: asyncio.Task[None] | None = None
    try:
        while not done and applied < _TRANSACTION_EVENTS:
            if not reader.ahead:  # the page is read on `conn` too
                if applying is not None:
                    await applying
                if isinstance(projection, Buffering):
                    await projection.settle()
            rows = await reader.page(conn, reached)
            with paused_gc():
                events = codec.recorded_page(rows)
            if applying is not None:
                await applying
            applying = asyncio.create_task(projection.apply(conn, events)) if events else None
            done = len(rows) < _PAGE
            reached = reader.head if done else rows[-1][0]
            applied += len(rows)
        if applying is not None:
            await applying
    finally:
        if applying is not None:
            # when failing, the page's statements end before the transaction rolls back
            with contextlib.suppress(BaseException):
                await applying
    return reached, done


class _ReadAhead:
    """Pages of a projection's events up to `head`, the next one read while one is applied.

    The log below the head is immutable, so the next page is read on a connection of its
    own, outside the applying transaction; the database works on it meanwhile. With a
    pool of one connection, pages are read in the transaction instead.
    """

    def __init__(self, pool: asyncpg.Pool, types: list[str], head: int) -> None:
        self._pool = pool
        self._types = types
        self.head = head
        self.ahead = pool.get_max_size() > 1
        self._next: tuple[int, asyncio.Task[list[asyncpg.Record]]] | None = None

    async def page(self, conn: asyncpg.Connection, after: int) -> list[asyncpg.Record]:
        """The events after `after` (at most a page), and the next page on its way."""
        if not self.ahead:
            rows: list[asyncpg.Record] = await conn.fetch(
                _PAGE_SQL, after, self.head, self._types, _PAGE
            )
            return rows
        if self._next is None or self._next[0] != after:
            await self.close()
            self._next = (after, asyncio.create_task(self._fetch(after)))
        rows = await self._next[1]
        self._next = None
        if len(rows) == _PAGE:
            following = rows[-1][0]
            self._next = (following, asyncio.create_task(self._fetch(following)))
        return rows

    async def close(self) -> None:
        """Wait for a page still on its way (it is dropped)."""
        if self._next is not None:
            task, self._next = self._next[1], None
            with contextlib.suppress(Exception):
                await task

    async def _fetch(self, after: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._pool.fetch(
            _PAGE_SQL, after, self.head, self._types, _PAGE
        )
        return rows


class _GcPauses:
    """How many pauses of the cyclic GC are held, and whether it ran before the first."""

    held = 0
    was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while any pause is held.

    Pauses nest and may be held by concurrent tasks: the collector runs again when the
    last one ends (if it ran before the first). Decoding pages and folding them allocate
    objects that live on (the page until applied, the states for the transaction); left
    running, the collector walks every live state again and again, which took a sixth
    of a catch-up of a million events.
    """
    if _GcPauses.held == 0:
        _GcPauses.was_enabled = gc.isenabled()
        gc.disable()
    _GcPauses.held += 1
    try:
        yield
    finally:
        _GcPauses.held -= 1
        if _GcPauses.held == 0 and _GcPauses.was_enabled:
            gc.enable()


async def lock_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    """A consumer's position, locked until the transaction ends (one consumer at a time)."""
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) "
        "ON CONFLICT (name) DO NOTHING",
        name,
    )
    position: int = await conn.fetchval(
        "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE", name
    )
    return position
