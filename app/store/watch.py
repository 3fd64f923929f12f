"""Waking subscribers when the log grows, in this process and from other processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import asyncpg

from app.store.events import NOTIFY_CHANNEL, EventStore, appended_types

_log = logging.getLogger("model_ledger.store")


class Subscription:
    """One follower's wake-up: set when the log grew, cleared when the follower wakes.

    A follower wakes at most once per `min_interval` seconds: appends arriving meanwhile are
    taken together. What a wake-up costs (a few reads) is paid per wake-up, not per append,
    so an idle replica's work is bounded however fast others write; what follows an append
    (a scorer's switch, a job's dispatch, a revocation) waits at most that much longer.
    """

    def __init__(
        self,
        min_interval: float = 0.0,
        *,
        only: frozenset[str] | None = None,
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        self._grew = asyncio.Event()
        self._min_interval = min_interval
        self._only = only
        self._ignore = ignore
        self._woke = -math.inf

    def notify(self, types: frozenset[str] | None = None) -> None:
        """The log grew by events of `types` (None: of any type). A follower is woken by
        the types it follows (`only` those, if given; none it `ignore`s); its wait's own
        timeout comes all the same."""
        if types is None:
            self._grew.set()
            return
        wanted = types - self._ignore
        if wanted and (self._only is None or not wanted.isdisjoint(self._only)):
            self._grew.set()

    async def wait(self, at_most_seconds: float) -> None:
        """Return once the log grew since the last call, or after `at_most_seconds`."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as it times out, and the follower task would then never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_seconds):
                await self._grew.wait()
        early = self._woke + self._min_interval - time.monotonic()
        if early > 0:
            await asyncio.sleep(early)  # pacing: appends meanwhile join this wake-up
        self._grew.clear()
        self._woke = time.monotonic()


class LogWatcher:
    """Wakes its subscriptions after any append: local ones directly, others via LISTEN.

    When the listening connection is lost (the database restarted or went away) it wakes
    everyone (what was appended meanwhile was not notified) and connects again, every
    `reconnect_seconds` until it succeeds, then wakes everyone once more.
    """

    def __init__(
        self,
        store: EventStore,
        database_url: str,
        *,
        reconnect_seconds: float = 0.5,
        min_interval: float = 0.0,
    ) -> None:
        self._store = store
        self._database_url = database_url
        self._reconnect_seconds = reconnect_seconds
        self._min_interval = min_interval
        self._subscriptions: list[Subscription] = []
        self._default = self.subscribe()
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        store.on_appended(self._on_local_append)

    async def start(self) -> None:
        """Listen for other processes' appends on a dedicated connection, kept connected."""
        await self._listen()
        self._keeper = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        """Stop listening."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    @property
    def listening(self) -> bool:
        """True while notifications from other processes can arrive."""
        return self._connection is not None and not self._lost.is_set()

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._database_url)
        lost = asyncio.Event()  # this connection's own: a late callback of an old one is moot
        connection.add_termination_listener(lambda _: lost.set())
        try:
            await connection.add_listener(NOTIFY_CHANNEL, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        self._connection, self._lost = connection, lost

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            _log.warning("lost the connection listening for appends; reconnecting")
            self._wake_all()
            while True:
                await asyncio.sleep(self._reconnect_seconds)
                try:
                    await self._listen()
                except Exception as error:  # still away: try again
                    _log.debug("listening for appends failed again: %s", error)
                else:
                    break
            _log.warning("listening for appends again")
            self._wake_all()

    def subscribe(
        self, *, only: Iterable[str] | None = None, ignore: Iterable[str] = ()
    ) -> Subscription:
        """A wake-up of its own for one more follower: by appends holding events of the
        types it follows (`only` those, if given; none it `ignore`s)."""
        subscription = Subscription(
            self._min_interval,
            only=None if only is None else frozenset(only),
            ignore=frozenset(ignore),
        )
        self._subscriptions.append(subscription)
        return subscription

    async def wait(self, at_most_seconds: float) -> None:
        """The default subscription's wait."""
        await self._default.wait(at_most_seconds)

    def _wake_all(self, types: frozenset[str] | None = None) -> None:
        for subscription in self._subscriptions:
            subscription.notify(types)

    def _on_local_append(self, _: int, types: frozenset[str]) -> None:
        self._wake_all(types)

    def _on_notification(self, *args: Any) -> None:
        # (connection, pid, channel, payload): the payload names the types appended
        self._wake_all(appended_types(args[-1]) if isinstance(args[-1], str) else None)
