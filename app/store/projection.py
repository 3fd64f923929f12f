"""What a projection is: a view of the log with its event types, its tables and how it
applies events (in the projector's transactions, or inline in the append's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import asyncpg

from app.store.codec import RecordedEvent

__all__ = ["Buffering", "Keeping", "Projection"]


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


@runtime_checkable
class Keeping(Buffering, Protocol):
    """A buffering projection that may keep what it read across the inline transactions of
    one process: valid while its checkpoint stays where this process's last commit left it
    (no other writer, projector or rebuild moved it since)."""

    def resume(self, checkpoint: int) -> None:
        """A transaction starts at `checkpoint`: keep what was kept if it is still current,
        else forget it (`begin`)."""

    def pass_over(self, checkpoint: int) -> None:
        """A transaction moves the checkpoint from `checkpoint` past events none of which are
        of its types: what was kept stays current only if it was current at `checkpoint`."""

    def kept_until(self, position: int) -> None:
        """The transaction projecting up to `position` committed: what it holds is current."""
