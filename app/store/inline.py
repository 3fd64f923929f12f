"""Inline projections: views written in the transaction that appends their events.

A command's response must reflect its own write (read-your-writes). Catching every view up
after each append took most of a command's time, so the views commands read back (the
governance views) are written with the events themselves, as Marten's inline projections
are: the rows and the projection's checkpoint commit with the append, or nothing does.

The append holds the log's lock (`ml_append`), so no other append can interleave: the
projection's checkpoint is either just below the batch, or a short gap of events another
path appended is projected first. An inline step never waits: when the asynchronous
projector holds the checkpoint (a long catch-up, a rebuild), or the gap is long, the batch
is left to it, and callers wait for that projector as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg

from app.store import codec
from app.store.codec import RecordedEvent
from domain.events import event_type

# more than this many events behind: the asynchronous projector catches the view up
_GAP_EVENTS = 1_000

_LOCK = "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE SKIP LOCKED"
_GAP = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed columns
    "WHERE position > $1 AND position < $2 AND type = ANY($3) ORDER BY position LIMIT $4"
)
_MOVE = "UPDATE projection_checkpoints SET position = $2 WHERE name = $1"


class InlineProjection(Protocol):
    """A projection that can apply a batch inside the caller's transaction."""

    @property
    def name(self) -> str:
        """Keys the projection's checkpoint."""

    @property
    def types(self) -> Sequence[str]:
        """The event types it reads."""

    def begin(self) -> None:
        """A transaction starts."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply events in position order."""

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write what `apply` left pending."""

    async def settle(self) -> None:
        """Wait for writes in flight on the connection."""


class InlineProjections:
    """Applies projections inside append transactions; reports how far each has reached."""

    def __init__(self, projections: Sequence[InlineProjection]) -> None:
        self._projections = list(projections)
        self._types = {p.name: frozenset(p.types) for p in projections}
        self._listeners: list[Callable[[str, int], None]] = []

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    def on_projected(self, listener: Callable[[str, int], None]) -> None:
        """Call `listener(name, position)` once a projection's rows up to position commit."""
        self._listeners.append(listener)

    async def apply(self, conn: asyncpg.Connection, appended: list[RecordedEvent]) -> list[str]:
        """Project the batch `appended` (positions in order) in the caller's transaction;
        the names of the projections that did (the others are left behind)."""
        if not appended:
            return []
        # one after another: they share the transaction's connection
        return [p.name for p in self._projections if await self._project(conn, p, appended)]

    def committed(self, names: list[str], position: int) -> None:
        """The transaction that projected up to `position` committed."""
        for name in names:
            for listener in self._listeners:
                listener(name, position)

    async def _project(
        self, conn: asyncpg.Connection, projection: InlineProjection, appended: list[RecordedEvent]
    ) -> bool:
        start: int | None = await conn.fetchval(_LOCK, projection.name)
        first, last = appended[0].position, appended[-1].position
        if start is None or start >= first:
            return False  # held by the asynchronous projector, or not set up yet
        types = self._types[projection.name]
        events: list[RecordedEvent] = []
        if start < first - 1:
            rows = await conn.fetch(_GAP, start, first, list(types), _GAP_EVENTS + 1)
            if len(rows) > _GAP_EVENTS:
                return False
            events = codec.recorded_page(rows)
        events += [e for e in appended if event_type(e.event) in types]
        projection.begin()
        try:
            if events:
                await projection.apply(conn, events)
            await projection.flush(conn)
        finally:
            await projection.settle()
        await conn.execute(_MOVE, projection.name, last)
        return True
