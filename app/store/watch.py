"""Waking subscribers when the log grows, in this process and from other processes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from app.store.events import NOTIFY_CHANNEL, EventStore


class Subscription:
    """One follower's wake-up: set when the log grew, cleared when the follower wakes."""

    def __init__(self) -> None:
        self._grew = asyncio.Event()

    def notify(self) -> None:
        """The log grew."""
        self._grew.set()

    async def wait(self, at_most_seconds: float) -> None:
        """Return once the log grew since the last call, or after `at_most_seconds`."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as it times out, and the follower task would then never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_seconds):
                await self._grew.wait()
        self._grew.clear()


class LogWatcher:
    """Wakes its subscriptions after any append: local ones directly, others via LISTEN."""

    def __init__(self, store: EventStore, database_url: str) -> None:
        self._store = store
        self._database_url = database_url
        self._subscriptions: list[Subscription] = []
        self._default = self.subscribe()
        self._connection: asyncpg.Connection | None = None
        store.on_append(self._on_local_append)

    async def start(self) -> None:
        """Listen for other processes' appends on a dedicated connection."""
        self._connection = await asyncpg.connect(self._database_url)
        await self._connection.add_listener(NOTIFY_CHANNEL, self._on_notification)

    async def stop(self) -> None:
        """Stop listening."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    def subscribe(self) -> Subscription:
        """A wake-up of its own for one more follower."""
        subscription = Subscription()
        self._subscriptions.append(subscription)
        return subscription

    async def wait(self, at_most_seconds: float) -> None:
        """The default subscription's wait."""
        await self._default.wait(at_most_seconds)

    def _wake_all(self) -> None:
        for subscription in self._subscriptions:
            subscription.notify()

    def _on_local_append(self, _: int) -> None:
        self._wake_all()

    def _on_notification(self, *_: Any) -> None:
        self._wake_all()
