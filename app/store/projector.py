"""Runs projections: views folded from the log, each with a checkpoint.

A projection's rows and its checkpoint are written in one transaction, so a view never
misses or double-applies an event. `catch_up_to(position)` after an append gives a client
read-your-writes: the view has seen its event before the response is sent. The checkpoint
row is locked (`FOR UPDATE`), so several processes may run the same projector safely.

A transaction reads the log in pages and applies up to `_TRANSACTION_EVENTS` events, so a
projection that keeps state between pages (`Buffering`) writes it once per transaction, not
once per page: what a catch-up or a rebuild of a long log costs is mostly those writes.

The projections advance together: each page of the union of their types is read once and
decoded once, and each projection applies its share in its own transaction (on its own
connection) while the others apply theirs: one folds in Python while the database writes
for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import Awaitable, Callable, Iterator, Sequence

import asyncpg

from app.store import codec
from app.store.codec import RecordedEvent
from app.store.events import EventStore
from app.store.projection import Buffering, Projection

_PAGE = 5_000
_TRANSACTION_EVENTS = 1_000_000


_PAGE_SQL = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed fragments
    "WHERE position > $1 AND position <= $2 AND type = ANY($3) ORDER BY position LIMIT $4"
)


_POSITIONS_SQL = (
    "SELECT (SELECT max(position) FROM events) AS head, min(position) AS reached, "
    "count(*) AS checkpoints FROM projection_checkpoints WHERE name = ANY($1)"
)


class Projector:
    """Keeps every projection caught up with the log."""

    def __init__(self, store: EventStore, projections: Sequence[Projection]) -> None:
        self._store = store
        self._projections = list(projections)
        self._lock = asyncio.Lock()
        self._caught_up_to = 0
        # how far each projection is known to have applied the log (by this projector, or
        # inline by this process's appends)
        self._reached = {p.name: 0 for p in projections}

    @property
    def projections(self) -> list[Projection]:
        return list(self._projections)

    def projected(self, name: str, position: int) -> None:
        """Projection `name` has applied the log up to `position` (an inline append says so)."""
        if name in self._reached:
            self._reached[name] = max(self._reached[name], position)

    async def catch_up_to(self, position: int, types: Sequence[str] | None = None) -> None:
        """Return once every projection has applied the log up to `position`; with `types`
        (those of the events just appended), only the projections that read one of them."""
        behind = self._behind(position, types)
        if not behind:
            return
        async with self._lock:
            behind = self._behind(position, types)
            if len(behind) == len(self._projections):
                await self._catch_up()
            elif behind:
                head, _ = await self._store.head()
                await self._advance_each(behind, head)
                for projection in behind:
                    self.projected(projection.name, head)

    def _behind(self, position: int, types: Sequence[str] | None) -> list[Projection]:
        if self._caught_up_to >= position:
            return []
        return [
            p
            for p in self._projections
            if self._reached[p.name] < position
            and (types is None or not set(types).isdisjoint(p.types))
        ]

    async def catch_up(self) -> int:
        """Apply everything committed so far; returns the position reached."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        head, reached = await self._positions()
        if reached is not None and reached >= head:  # every view was written inline
            return self._at(head)
        # A catch-up of more than a page (a rebuild, a start after downtime) runs with the
        # cyclic GC paused throughout, awaits included: the projector makes no reference
        # cycles, and what other tasks of the process make meanwhile is collected after.
        long_run = head - self._caught_up_to > _PAGE
        with paused_gc() if long_run else contextlib.nullcontext():
            await self._advance_each(self._projections, head)
        return self._at(head)

    def _at(self, head: int) -> int:
        """Every projection has applied the log up to `head`."""
        self._caught_up_to = max(self._caught_up_to, head)
        for projection in self._projections:
            self.projected(projection.name, head)
        return head

    async def _positions(self) -> tuple[int, int | None]:
        """The log's head and the position every projection has reached (None while one has
        no checkpoint yet), in one read."""
        row = await self._store.pool.fetchrow(_POSITIONS_SQL, [p.name for p in self._projections])
        complete = row["checkpoints"] == len(self._projections)
        return int(row["head"] or 0), int(row["reached"]) if complete else None

    async def _advance_each(self, projections: Sequence[Projection], head: int) -> None:
        # together they hold a connection each and borrow one to read ahead; a pool
        # without that many runs them one by one
        if self._store.pool.get_max_size() > len(projections):
            await self._advance(projections, head)
        else:
            for projection in projections:
                await self._advance([projection], head)

    async def _advance(self, projections: Sequence[Projection], head: int) -> None:
        """Bring `projections` to `head`, reading each page once for all of them."""
        pool = self._store.pool
        reader = _ReadAhead(pool, sorted({t for p in projections for t in p.types}), head)
        ordered = _lock_order(projections)
        done = False
        try:
            while not done:
                async with contextlib.AsyncExitStack() as stack:
                    conns, starts = {}, {}
                    for projection in ordered:
                        conn = await stack.enter_async_context(pool.acquire())
                        await stack.enter_async_context(conn.transaction())
                        conns[projection.name] = conn
                        starts[projection.name] = await lock_checkpoint(conn, projection.name)
                    behind = [p for p in ordered if starts[p.name] < head]
                    if not behind:
                        return
                    buffering = [p for p in behind if isinstance(p, Buffering)]
                    for projection in buffering:
                        projection.begin()
                    try:
                        reached, done = await _apply_pages(conns, behind, starts, reader)
                    except BaseException:
                        for projection in buffering:  # its writes end before the rollback
                            with contextlib.suppress(BaseException):
                                await projection.settle()
                        raise
                    for projection in behind:
                        conn = conns[projection.name]
                        if isinstance(projection, Buffering):
                            await projection.flush(conn)
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
                for projection in _lock_order(self._projections):
                    await lock_checkpoint(conn, projection.name)
                    tables = ", ".join(projection.tables)
                    await conn.execute(f"TRUNCATE {tables}")
                    await conn.execute(
                        "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
                        projection.name,
                    )
            self._caught_up_to = 0
            self._reached = dict.fromkeys(self._reached, 0)
            return await self._catch_up()


async def _apply_pages(
    conns: dict[str, asyncpg.Connection],
    projections: Sequence[Projection],
    starts: dict[str, int],
    reader: _ReadAhead,
) -> tuple[int, bool]:
    """Apply up to `_TRANSACTION_EVENTS` events after the checkpoints `starts` (each
    projection on its connection): (position reached, at head).

    Each projection applies its share of each page in order without waiting for the
    others; the next page is read and decoded meanwhile, at most two pages ahead of the
    slowest projection.
    """
    reached = min(starts[p.name] for p in projections)
    applied, done = 0, False
    types = {p.name: frozenset(p.types) for p in projections}
    last: dict[str, asyncio.Task[None]] = {}  # each projection's latest page
    pages: list[list[asyncio.Task[None]]] = []  # the pages still being applied
    try:
        while not done and applied < _TRANSACTION_EVENTS:
            if not reader.ahead:  # the page is read on the (only) projection's connection
                await _settled(pages, projections)
            rows = await reader.page(conns[projections[0].name], reached)
            with paused_gc():
                events = codec.recorded_page(rows)
                tags = [row[4] for row in rows]
            page = []
            for projection in projections:
                name = projection.name
                share = _share(tags, events, types[name], starts[name], reached)
                if share:
                    apply = functools.partial(projection.apply, conns[name], share)
                    last[name] = asyncio.create_task(_after(last.get(name), apply))
                    page.append(last[name])
            pages.append(page)
            if len(pages) > 2:
                await asyncio.gather(*pages.pop(0))
            done = len(rows) < _PAGE
            reached = reader.head if done else rows[-1][0]
            applied += len(rows)
        await _settled(pages, [])
    finally:
        # when failing, the pages' statements end before the transactions roll back (a
        # projection's latest page waits for its earlier ones)
        for task in last.values():
            with contextlib.suppress(BaseException):
                await task
    return reached, done


def _share(
    tags: list[str],
    events: list[RecordedEvent],
    types: frozenset[str],
    start: int,
    after: int,
) -> list[RecordedEvent]:
    """A projection's share of a page read after position `after` (its event types are
    `tags`): the events of `types` past its checkpoint `start`."""
    if start > after:
        return [e for t, e in zip(tags, events, strict=True) if t in types and e.position > start]
    if types.issuperset(tags):
        return events
    return [e for t, e in zip(tags, events, strict=True) if t in types]


async def _after(previous: asyncio.Task[None] | None, apply: Callable[[], Awaitable[None]]) -> None:
    if previous is not None:
        await previous
    await apply()


async def _settled(
    pages: list[list[asyncio.Task[None]]], projections: Sequence[Projection]
) -> None:
    """Every page applied, and the writes of buffering `projections` ended."""
    while pages:
        await asyncio.gather(*pages.pop(0))
    for projection in projections:
        if isinstance(projection, Buffering):
            await projection.settle()


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


def _lock_order(projections: Sequence[Projection]) -> list[Projection]:
    """The one order in which anything takes several checkpoint locks.

    Projections advancing together hold their locks in transactions of their own, so a
    wait among them goes through this process, where PostgreSQL's deadlock detector does
    not see it: another locker taking the same locks in another order would wait forever.
    """
    return sorted(projections, key=lambda p: p.name)


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
