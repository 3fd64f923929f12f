"""The event store's guarantees, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.resources import create_pool
from app.services.audit import verify_log
from app.store.checkpoints import SIGN_LOCK, Checkpointer
from app.store.events import LOG_LOCK, EventStore, Idempotency
from app.store.inline import InlineProjections
from domain.errors import ConcurrencyConflict, IdempotencyKeyReused
from domain.events import EventMeta, TokenIssued, TokenRevoked

META = EventMeta(actor="tester", role="admin")


def issued(n: int = 0) -> TokenIssued:
    return TokenIssued(token_id=f"t{n}", subject=f"subject-{n}", role="ci", token_sha256="0" * 64)


@contextlib.asynccontextmanager
async def open_store(database_url: str, **options: object) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        yield EventStore(pool, **options)  # type: ignore[arg-type]
    finally:
        await pool.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    async with open_store(database_url) as opened:
        yield opened


async def test_append_then_read_stream_in_version_order(store: EventStore) -> None:
    first = await store.append(
        "s-1", [issued(1), TokenRevoked(token_id="t1")], meta=META, expected_version=0
    )
    assert (first.first_position, first.last_position, first.stream_version) == (1, 2, 2)
    events = await store.read_stream("s-1")
    assert [e.version for e in events] == [1, 2]
    assert isinstance(events[1].event, TokenRevoked)
    assert events[0].meta == META


async def test_expected_version_mismatch_is_a_conflict_and_appends_nothing(
    store: EventStore,
) -> None:
    await store.append("s-1", [issued(1)], meta=META, expected_version=0)
    with pytest.raises(ConcurrencyConflict) as caught:
        await store.append("s-1", [issued(2), issued(3)], meta=META, expected_version=0)
    assert caught.value.extra["actual_version"] == 1
    assert len(await store.read_all()) == 1


async def test_concurrent_appends_at_one_expected_version_exactly_one_wins(
    store: EventStore,
) -> None:
    # same process: both land in one group-commit batch
    outcomes = await asyncio.gather(
        *(store.append("s-1", [issued(n)], meta=META, expected_version=0) for n in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, ConcurrencyConflict) for o in outcomes if isinstance(o, Exception))
    assert len(await store.read_stream("s-1")) == 1


async def test_concurrent_appends_from_two_processes_exactly_one_wins(database_url: str) -> None:
    # separate pools stand for separate processes: only the advisory lock orders them
    async with open_store(database_url) as a, open_store(database_url) as b:
        outcomes = await asyncio.gather(
            a.append("s-1", [issued(1)], meta=META, expected_version=0),
            b.append("s-1", [issued(2)], meta=META, expected_version=0),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["AppendResult", "ConcurrencyConflict"]
        assert len(await a.read_stream("s-1")) == 1


async def test_a_conflict_in_a_batch_does_not_fail_the_others(store: EventStore) -> None:
    await store.append("taken", [issued(0)], meta=META, expected_version=None)
    outcomes = await asyncio.gather(
        store.append("taken", [issued(1)], meta=META, expected_version=0),
        *(store.append(f"free-{n}", [issued(n)], meta=META, expected_version=0) for n in range(10)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ConcurrencyConflict)
    assert not any(isinstance(o, Exception) for o in outcomes[1:])
    assert [e.position for e in await store.read_all()] == list(range(1, 12))


async def test_concurrent_appends_share_transactions(store: EventStore) -> None:
    await asyncio.gather(
        *(store.append(f"s-{n}", [issued(n)], meta=META, expected_version=0) for n in range(200))
    )
    events = await store.read_all(limit=1_000)
    assert len(events) == 200
    # one recorded_at per transaction: far fewer transactions than appends
    assert len({e.recorded_at for e in events}) < 50


async def test_appends_arriving_while_a_batch_waits_for_the_log_lock_join_that_batch(
    database_url: str,
) -> None:
    # another process's batch holds the log's lock (through its commit): what this process
    # appends meanwhile commits with the batch already waiting, not in one more after it
    async with open_store(database_url, inline=InlineProjections([])) as store:
        holder = await asyncpg.connect(database_url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)
                first = asyncio.create_task(
                    store.append("s-0", [issued(0)], meta=META, expected_version=0)
                )
                await wait_until(
                    lambda: lock_sessions(holder, granted=False, key=LOG_LOCK), equals=1
                )
                later = [
                    asyncio.create_task(
                        store.append(f"s-{n}", [issued(n)], meta=META, expected_version=0)
                    )
                    for n in range(1, 4)
                ]
                await asyncio.sleep(0)  # queued while the batch waits for the lock
            results = await asyncio.gather(first, *later)
        finally:
            await holder.close()
        assert [r.first_position for r in results] == [1, 2, 3, 4]
        transactions = await store.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM events")
        assert transactions == 1


async def test_a_caller_that_stops_waiting_does_not_cost_its_batch_mates_their_results(
    store: EventStore,
) -> None:
    heads: list[int] = []
    store.on_append(heads.append)
    gone = asyncio.create_task(store.append("s-gone", [issued(1)], meta=META, expected_version=0))
    stays = asyncio.create_task(store.append("s-stays", [issued(2)], meta=META, expected_version=0))
    await asyncio.sleep(0)  # both requests are queued for the same batch
    gone.cancel()  # as a job's timeout does, while the batch is in flight
    result = await stays
    assert not result.replayed and [e.event for e in result.events] == [issued(2)]
    assert gone.cancelled()
    assert heads and heads[-1] == (await store.read_all(limit=10))[-1].position


async def test_idempotent_append_returns_the_first_result_and_appends_once(
    store: EventStore,
) -> None:
    key = Idempotency(scope="ci-bot", key="k-1", request_digest="digest-a")
    first = await store.append(
        "s-1", [issued(1)], meta=META, expected_version=None, idempotency=key
    )
    again = await store.append(
        "s-1", [issued(1)], meta=META, expected_version=None, idempotency=key
    )
    assert again.replayed and not first.replayed
    assert (again.first_position, again.last_position, again.stream_version) == (
        first.first_position,
        first.last_position,
        first.stream_version,
    )
    assert len(await store.read_all()) == 1


async def test_idempotency_key_reused_with_another_request_is_refused(store: EventStore) -> None:
    await store.append(
        "s-1",
        [issued(1)],
        meta=META,
        expected_version=None,
        idempotency=Idempotency(scope="ci-bot", key="k-1", request_digest="digest-a"),
    )
    with pytest.raises(IdempotencyKeyReused):
        await store.append(
            "s-1",
            [issued(2)],
            meta=META,
            expected_version=None,
            idempotency=Idempotency(scope="ci-bot", key="k-1", request_digest="digest-b"),
        )
    # the same key of another subject is another key
    await store.append(
        "s-1",
        [issued(3)],
        meta=META,
        expected_version=None,
        idempotency=Idempotency(scope="other", key="k-1", request_digest="digest-b"),
    )
    assert len(await store.read_all()) == 2


async def test_fixed_event_ids_make_a_retried_append_a_replay(store: EventStore) -> None:
    import uuid

    ids = [uuid.uuid4()]
    first = await store.append(
        "job-1", [issued(1)], meta=META, expected_version=None, event_ids=ids
    )
    retry = await store.append(
        "job-1", [issued(1)], meta=META, expected_version=None, event_ids=ids
    )
    assert retry.replayed and retry.last_position == first.last_position
    assert len(await store.read_all()) == 1


async def test_listeners_are_called_after_commit(store: EventStore) -> None:
    seen: list[int] = []
    visible: list[int] = []

    def listener(head: int) -> None:
        seen.append(head)
        visible.append(head)

    store.on_append(listener)
    result = await store.append("s-1", [issued(1)], meta=META, expected_version=0)
    assert seen == [result.last_position]
    # the listener ran after commit: another connection already sees the event
    assert (await store.head())[0] == visible[0]


async def test_sixteen_writers_never_show_a_reader_a_gap(database_url: str) -> None:
    writers, appends_each = 16, 25
    stop = asyncio.Event()
    observed: list[int] = []

    async def write(n: int) -> None:
        async with open_store(database_url) as own:  # a process of its own
            for i in range(appends_each):
                size = random.randint(1, 3)
                await own.append(
                    f"w{n}-s{i % 5}", [issued(i)] * size, meta=META, expected_version=None
                )

    async def read() -> None:
        async with open_store(database_url) as reader:
            while True:
                batch = await reader.read_all(observed[-1] if observed else 0, 500)
                for event in batch:
                    # never a position below or beside one already passed
                    assert event.position == (observed[-1] + 1 if observed else 1)
                    observed.append(event.position)
                if stop.is_set() and not batch:
                    return
                await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(n) for n in range(writers)))
    stop.set()
    await reader
    async with open_store(database_url) as check:
        head, _ = await check.head()
        assert observed == list(range(1, head + 1))
        report = await verify_log(check, Ed25519PrivateKey.generate().public_key())
        assert report.ok and report.checked == head
    assert head >= writers * appends_each


async def test_checkpoints_sign_the_head_only_when_it_moved(store: EventStore) -> None:
    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(store, key)
    assert await checkpointer.sign_head() is None  # empty log
    await store.append("s-1", [issued(1)], meta=META, expected_version=0)
    signed = await checkpointer.sign_head()
    assert signed is not None and signed.position == 1
    assert await checkpointer.sign_head() is None
    report = await verify_log(store, key.public_key())
    assert report.ok and report.latest_checkpoint == 1


async def test_a_signer_stopped_as_it_got_the_lock_does_not_keep_it(
    store: EventStore, database_url: str
) -> None:
    checkpointer = Checkpointer(store, Ed25519PrivateKey.generate())
    await store.append("s-1", [issued(1)], meta=META, expected_version=0)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SIGN_LOCK)
        signing = asyncio.create_task(checkpointer.sign_head())
        await wait_until(lambda: lock_sessions(holder, granted=False), equals=1)
        # the server grants the waiting signer the lock as this returns; its task is stopped
        # before it reads the answer (as at a shutdown, or a job's timeout)
        await holder.execute("SELECT pg_advisory_unlock($1)", SIGN_LOCK)
        signing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signing
        await wait_until(lambda: lock_sessions(holder, granted=True), equals=0)
    finally:
        await holder.close()
    # the stopped signer may have signed the head before its stop landed: a new head makes
    # the next signature due either way (it takes the lock first, so a kept lock hangs it)
    await store.append("s-1", [issued(2)], meta=META, expected_version=1)
    async with asyncio.timeout(30):
        assert (await checkpointer.sign_head()) is not None


async def lock_sessions(conn: asyncpg.Connection, *, granted: bool, key: int = SIGN_LOCK) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
        "AND granted = $2 AND database = (SELECT oid FROM pg_database WHERE datname = "
        "current_database())",
        key,
        granted,
    )
    return count


async def wait_until(
    probe: Callable[[], Awaitable[int]], *, equals: int, seconds: float = 30.0
) -> None:
    async with asyncio.timeout(seconds):
        while await probe() != equals:  # noqa: ASYNC110 - the server's lock table, polled
            await asyncio.sleep(0.01)
