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

import asyncpg

from app.store import codec
from app.store.codec import RecordedEvent
from app.store.projection import Buffering, Keeping, Projection
from domain.events import event_type

# more than this many events behind: the asynchronous projector catches the view up
_GAP_EVENTS = 1_000

_GAP = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed columns
    "WHERE position > $1 AND position < $2 AND type = ANY($3) ORDER BY position LIMIT $4"
)
_MOVE = "UPDATE projection_checkpoints SET position = $2 WHERE name = ANY($1)"


class InlineProjections:
    """Applies projections inside append transactions; reports how far each has reached."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self._projections = list(projections)
        self._types = {p.name: frozenset(p.types) for p in projections}
        self._listeners: list[Callable[[str, int], None]] = []

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    def on_projected(self, listener: Callable[[str, int], None]) -> None:
        """Call `listener(name, position)` once a projection's rows up to position commit."""
        self._listeners.append(listener)

    async def apply(
        self, conn: asyncpg.Connection, appended: list[RecordedEvent], starts: dict[str, int]
    ) -> list[str]:
        """Project the batch `appended` (positions in order) in the caller's transaction;
        the names of the projections that did (the others are left behind).

        `starts` holds the checkpoints the transaction locked, those the asynchronous
        projector holds left out, as they were before the batch: the append's statement
        (`app.store.events`) locked them, and moved those right below the batch past it.
        """
        if not appended:
            return []
        first, last = appended[0].position, appended[-1].position
        done: list[str] = []
        behind: list[str] = []
        for projection in self._projections:  # one after another: they share the connection
            start = starts.get(projection.name)
            if (
                start is not None
                and start < first
                and await self._project(conn, projection, start, appended)
            ):
                done.append(projection.name)
                # the append's statement moved those right below the batch, not these
                if start < first - 1:
                    behind.append(projection.name)
        if behind:
            await conn.execute(_MOVE, behind, last)
        return done

    def committed(self, names: list[str], position: int) -> None:
        """The transaction that projected up to `position` committed."""
        for projection in self._projections:
            if isinstance(projection, Keeping) and projection.name in names:
                projection.kept_until(position)
        for name in names:
            for listener in self._listeners:
                listener(name, position)

    async def _project(
        self,
        conn: asyncpg.Connection,
        projection: Projection,
        start: int,
        appended: list[RecordedEvent],
    ) -> bool:
        """Apply the events of the projection's types after `start` up to the batch's end;
        False when they are too many to project here (the gap is left to the projector)."""
        first = appended[0].position
        types = self._types[projection.name]
        events: list[RecordedEvent] = []
        if start < first - 1:
            rows = await conn.fetch(_GAP, start, first, list(types), _GAP_EVENTS + 1)
            if len(rows) > _GAP_EVENTS:
                return False
            events = codec.recorded_page(rows)
        events += [e for e in appended if event_type(e.event) in types]
        if not events:  # nothing of its types: its checkpoint just moves past the batch
            if isinstance(projection, Keeping):
                projection.pass_over(start)
            return True
        if isinstance(projection, Buffering):
            if isinstance(projection, Keeping):
                projection.resume(start)  # what it kept from its last commit, if current
            else:
                projection.begin()
            try:
                await projection.apply(conn, events)
                await projection.flush(conn)
            finally:
                await projection.settle()
        else:
            await projection.apply(conn, events)
        return True
