"""Wake-ups name the event types appended, and each follower wakes only for the types it
follows (app/store/watch.py): an idle replica's job dispatcher, token table and scorer are
not run by appends that cannot concern them; the position alone (a payload without types,
or a lost connection) still wakes everyone."""

from __future__ import annotations

import asyncio

import asyncpg

from app.resources import Resources, create_pool
from app.store.events import NOTIFY_CHANNEL, VIEWS_BEHIND, EventStore, appended_types, wake_up
from app.store.watch import LogWatcher, Subscription
from domain import events as ev


def test_a_payload_round_trips_its_types_and_an_old_one_says_nothing() -> None:
    assert appended_types(wake_up(7, {"token.revoked", "model.registered"})) == frozenset(
        {"model.registered", "token.revoked"}
    )
    assert appended_types("7") is None  # a sender that names no types: anything may be new
    assert appended_types(wake_up(7, set())) is None


async def test_followers_wake_for_their_types_only() -> None:
    jobs = Subscription(only=frozenset({"job.requested"}))
    scoring = Subscription(ignore=frozenset({"model.registered"}))
    everyone = Subscription()
    subscriptions = (jobs, scoring, everyone)

    def woken() -> tuple[bool, ...]:
        return tuple(s._grew.is_set() for s in subscriptions)

    for s in subscriptions:
        s.notify(frozenset({"model.registered"}))
    assert woken() == (False, False, True)
    for s in subscriptions:
        s.notify(frozenset({"model.registered", "job.requested"}))
    assert woken() == (True, True, True)
    fresh = (Subscription(only=frozenset({"job.requested"})), Subscription(ignore=frozenset({"x"})))
    for s in fresh:
        s.notify(None)  # untyped: a lost connection, an older sender
    assert all(s._grew.is_set() for s in fresh)
    for s in subscriptions:
        await s.wait(0)  # a wake-up clears it
    assert woken() == (False, False, False)


async def test_another_processes_append_wakes_the_followers_of_its_types(
    database_url: str,
) -> None:
    writer_pool = await create_pool(database_url, min_size=1, max_size=2)
    reader_pool = await create_pool(database_url, min_size=1, max_size=2)
    writer = EventStore(writer_pool, notify=True)  # another process, as far as LISTEN knows
    watcher = LogWatcher(EventStore(reader_pool), database_url)
    jobs = watcher.subscribe(only=["job.requested"])
    tokens = watcher.subscribe(only=["token.issued", "token.revoked"])
    # this writer writes no views: its wake-ups say it left them behind
    scoring = watcher.subscribe(ignore=["model.registered", VIEWS_BEHIND])
    everyone = watcher.subscribe()
    await watcher.start()
    meta = ev.EventMeta(actor="ci", role="ci")
    try:
        for s in (jobs, tokens, scoring, everyone):
            await s.wait(0)
        await writer.append(
            "model-m",
            [ev.ModelRegistered(name="m", risk_tier="low")],
            meta=meta,
            expected_version=0,
        )
        async with asyncio.timeout(30):
            await everyone.wait(60)  # the wake-up arrived: every subscription has had it
        assert not jobs._grew.is_set()
        assert not tokens._grew.is_set()
        assert not scoring._grew.is_set()

        await writer.append(
            "model-m",
            [ev.ModelUpdated(name="m", description="d")],
            meta=meta,
            expected_version=1,
        )
        async with asyncio.timeout(30):
            await scoring.wait(60)  # not a registration: what serves may have changed
            await everyone.wait(60)
        assert not jobs._grew.is_set()
        assert not tokens._grew.is_set()
    finally:
        await watcher.stop()
        await writer.drain()
        await writer_pool.close()
        await reader_pool.close()


async def test_only_an_append_that_left_views_behind_wakes_the_views_followers(
    resources: Resources, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    meta = ev.EventMeta(actor="ci", role="ci")
    bare_pool = await create_pool(database_url, min_size=1, max_size=2)
    bare = EventStore(bare_pool, notify=True)  # writes no view: leaves them all behind
    try:
        await resources.projector.catch_up()
        await resources.store.append(
            "model-a",
            [ev.ModelRegistered(name="a", risk_tier="low")],
            meta=meta,
            expected_version=0,
        )  # the views written with it
        async with asyncio.timeout(30):
            assert appended_types(await heard.get()) == {"model.registered"}
        await bare.append(
            "model-b",
            [ev.ModelRegistered(name="b", risk_tier="low")],
            meta=meta,
            expected_version=0,
        )
        async with asyncio.timeout(30):
            assert appended_types(await heard.get()) == {"model.registered", VIEWS_BEHIND}
    finally:
        await bare.drain()
        await bare_pool.close()
        await listener.close()
