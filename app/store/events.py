"""The event store: appends through group commit, reads by stream or by position.

Concurrent `append` calls in one process are gathered into one call of the `ml_append`
database function, one transaction and one round trip per batch. The function takes a
transaction-scoped advisory lock, so positions are assigned in commit order across all
processes (gap-free global reads) and the hash chain is extended by exactly one writer at
a time. Subscribers are woken after commit, never by NOTIFY inside the append.

With views written inline, a batch's transaction takes that lock before the batch is
closed: while another process's batch holds it (through its commit's WAL flush), the
appends arriving here join the batch waiting for it. Closed before, the batch waited with
what it held and the late ones waited for the next: two processes writing at once made
twice the commits, half as large, each waiting out the other's flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from app.outages import is_outage
from app.store import codec
from app.store.codec import RecordedEvent, StoredEvent
from app.store.inline import InlineProjections
from domain.errors import ConcurrencyConflict, IdempotencyKeyReused
from domain.events import Event, EventMeta, event_type

NOTIFY_CHANNEL = "ml_events"
# Not an event type: named in a wake-up when the appending transaction left some view
# behind (no inline projections, or one the asynchronous projector held), for the followers
# that catch views up; when it did not, they have nothing to do for that append.
VIEWS_BEHIND = "views.behind"

_log = logging.getLogger("model_ledger.store")

# the advisory lock `ml_append` takes (app/store/migrations/sql/0001/append.sql)
LOG_LOCK = 7244501
# one round trip: a batch is closed once its transaction holds the log's lock
_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({LOG_LOCK})"
_APPEND_SQL = "SELECT * FROM ml_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
# The append and the inline projections' checkpoints in one round trip: the checkpoints are
# locked after `ml_append` took the log's lock (the EXISTS reads its result), so the previous
# appender has committed and released them; SKIP LOCKED leaves those the asynchronous
# projector holds (app/store/inline.py). Those right below the batch move past it here (the
# transaction projects the batch or rolls back); `c` returns them as they were before.
_APPEND_LOCKING_SQL = (
    "WITH a AS MATERIALIZED (SELECT * FROM ml_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)), "
    "b AS MATERIALIZED (SELECT min(o_first) AS first, max(o_last) AS last FROM a "
    "WHERE o_status = 'ok'), "
    "c AS MATERIALIZED (SELECT name, position FROM projection_checkpoints "
    "WHERE name = ANY($11::text[]) AND EXISTS (SELECT FROM b WHERE first IS NOT NULL) "
    "FOR UPDATE SKIP LOCKED), "
    "m AS (UPDATE projection_checkpoints p SET position = b.last FROM c, b "
    "WHERE p.name = c.name AND c.position = b.first - 1) "
    "SELECT a.*, (SELECT array_agg(name ORDER BY name) FROM c) AS c_names, "
    "(SELECT array_agg(position ORDER BY name) FROM c) AS c_positions FROM a"
)
# a lateral join per stream, so each is read by the (stream, version) index whatever its length
_TAILS_SQL = (
    f"SELECT e.* FROM unnest($1::text[], $2::bigint[]) AS t(stream, after) "  # noqa: S608
    f"CROSS JOIN LATERAL (SELECT {codec.COLUMNS} FROM events "
    "WHERE stream = t.stream AND version > t.after ORDER BY version) AS e"
)


class Idempotency(msgspec.Struct, frozen=True):
    """A client's idempotency key, scoped to its subject, and the digest of its request."""

    scope: str
    key: str
    request_digest: str


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Where an append landed, and the events as recorded (none when `replayed`: an earlier
    identical append is returned)."""

    stream: str
    first_position: int
    last_position: int
    stream_version: int
    recorded_at: datetime
    replayed: bool = False
    events: list[RecordedEvent] = msgspec.field(default_factory=list)


class _Request(msgspec.Struct, kw_only=True):
    stream: str
    expected_version: int | None
    idempotency: Idempotency | None
    event_ids: list[uuid.UUID]
    types: list[str]
    data: list[str]
    meta: str
    events: Sequence[Event]
    meta_struct: EventMeta
    future: asyncio.Future[AppendResult]


class EventStore:
    """Append to and read from the log over an asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_max_events: int = 1_000,
        notify: bool = False,
        inline: InlineProjections | None = None,
    ) -> None:
        self._pool = pool
        self._inline = inline
        self._batch_max_events = batch_max_events
        self._pending: list[_Request] = []
        self._flusher: asyncio.Task[None] | None = None
        self._head = 0
        self._listeners: list[Callable[[int], None]] = []
        self._typed_listeners: list[Callable[[int, frozenset[str]], None]] = []
        self._notify = notify
        self._notify_position: int | None = None
        self._notify_types: set[str] = set()  # of the appends the next wake-up tells of
        self._notifier: asyncio.Task[None] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        meta: EventMeta,
        expected_version: int | None,
        idempotency: Idempotency | None = None,
        event_ids: Sequence[uuid.UUID] | None = None,
    ) -> AppendResult:
        """Append events to one stream atomically.

        `expected_version` None appends whatever the stream holds; 0 requires a new stream.
        Raises ConcurrencyConflict or IdempotencyKeyReused; appends nothing then.
        """
        if not events:
            raise ValueError("append needs at least one event")
        ids = list(event_ids) if event_ids is not None else [uuid.uuid4() for _ in events]
        if len(ids) != len(events):
            raise ValueError("one event id per event")
        request = _Request(
            stream=stream,
            expected_version=expected_version,
            idempotency=idempotency,
            event_ids=ids,
            types=[event_type(e) for e in events],
            data=[codec.encode_event(e) for e in events],
            meta=codec.encode_meta(meta),
            events=events,
            meta_struct=meta,
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending.append(request)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_pending())
        return await request.future

    async def _flush_pending(self) -> None:
        # One flush at a time per process; appends arriving meanwhile wait for the next
        # batch, which is what makes concurrent appends share a transaction.
        batch: list[_Request] = []
        try:
            while self._pending:
                batch = []
                self._take_more(batch)
                try:
                    await self._write(batch, grow=True)
                except Exception:
                    # Event ids are fixed before the first try, so a request that did land
                    # comes back as a replay rather than twice.
                    for request in batch:
                        if not request.future.done():
                            await self._write_alone(request)
        except BaseException:
            for request in [*batch, *self._pending]:
                if not request.future.done():
                    request.future.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _write_alone(self, request: _Request) -> None:
        try:
            await self._write([request], grow=False)
        except Exception as error:
            if not request.future.done():
                request.future.set_exception(error)

    def _take_more(self, batch: list[_Request]) -> None:
        """Move pending requests into `batch` (at least one) up to the events' bound."""
        count = sum(len(request.types) for request in batch)
        while self._pending and (
            not batch or count + len(self._pending[0].types) <= self._batch_max_events
        ):
            request = self._pending.pop(0)
            batch.append(request)
            count += len(request.types)

    async def _write(self, batch: list[_Request], *, grow: bool) -> None:
        """Append `batch`; with `grow`, and views inline, it takes in place the requests
        that arrive until its transaction holds the log's lock."""
        projected: list[str] = []
        async with self._pool.acquire() as conn:
            if self._inline is None:
                rows = await conn.fetch(_APPEND_SQL, *_batch_arguments(batch))
                recorded = {row["o_req"]: _recorded(batch, row) for row in rows}
            else:
                rows, recorded, projected = await self._write_inline(
                    conn, self._inline, batch, grow=grow
                )
        behind = self._inline is None or len(projected) < len(self._inline.names)
        replays: list[tuple[_Request, int, int]] = []
        types: set[str] = set()
        for row in rows:
            request = batch[row["o_req"]]
            status = row["o_status"]
            if status == "ok":
                _settle(
                    request.future,
                    AppendResult(
                        stream=request.stream,
                        first_position=row["o_first"],
                        last_position=row["o_last"],
                        stream_version=row["o_version"],
                        recorded_at=row["o_recorded_at"],
                        events=recorded[row["o_req"]],
                    ),
                )
                self._advance_head(row["o_last"])
                types.update(request.types)
            elif status == "conflict":
                _settle(
                    request.future,
                    ConcurrencyConflict(
                        f"stream {request.stream} is at version {row['o_version']}, "
                        f"expected {request.expected_version}",
                        stream=request.stream,
                        expected_version=request.expected_version,
                        actual_version=row["o_version"],
                    ),
                )
            elif status == "mismatch":
                _settle(
                    request.future,
                    IdempotencyKeyReused(
                        "this Idempotency-Key was already used with a different request"
                    ),
                )
            else:  # replayed or duplicate: the earlier append stands
                replays.append((request, row["o_first"], row["o_last"]))
        for request, first, last in replays:
            if not request.future.done():
                _settle(request.future, await self._result_at(request.stream, first, last))
        if types and behind:  # appended, and not every view has it
            types.add(VIEWS_BEHIND)
        await self._wake(frozenset(types))

    async def _write_inline(
        self,
        conn: asyncpg.Connection,
        inline: InlineProjections,
        batch: list[_Request],
        *,
        grow: bool,
    ) -> tuple[list[asyncpg.Record], dict[int, list[RecordedEvent]], list[str]]:
        """The batch appended and its views projected in one transaction, committed; the
        append's rows, each request's events, and the projections that took them."""
        await conn.execute(_BEGIN_LOCKED)
        try:
            if grow:
                self._take_more(batch)
            rows = await conn.fetch(_APPEND_LOCKING_SQL, *_batch_arguments(batch), inline.names)
            recorded = {row["o_req"]: _recorded(batch, row) for row in rows}
            appended = sorted(
                (e for events in recorded.values() for e in events), key=lambda e: e.position
            )
            names, positions = rows[0]["c_names"] or [], rows[0]["c_positions"] or []
            starts = dict(zip(names, positions, strict=True))
            projected = await inline.apply(conn, appended, starts)
        except BaseException:
            # a connection that cannot roll back is rolled back or dropped on release
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        if projected:
            inline.committed(projected, appended[-1].position)
        return rows, recorded, projected

    async def replayed(self, idempotency: Idempotency) -> AppendResult | None:
        """The result of an earlier append under this key, if any (a retry need not decide).

        Raises IdempotencyKeyReused when the key came with a different request.
        """
        row = await self._pool.fetchrow(
            "SELECT request_digest, stream, first_position, last_position FROM idempotency_keys "
            "WHERE scope = $1 AND key = $2",
            idempotency.scope,
            idempotency.key,
        )
        if row is None:
            return None
        if row["request_digest"] != idempotency.request_digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request"
            )
        return await self._result_at(row["stream"], row["first_position"], row["last_position"])

    async def _result_at(self, stream: str, first: int, last: int) -> AppendResult:
        row = await self._pool.fetchrow(
            "SELECT version, recorded_at FROM events WHERE position = $1", last
        )
        return AppendResult(
            stream=stream,
            first_position=first,
            last_position=last,
            stream_version=row["version"],
            recorded_at=row["recorded_at"],
            replayed=True,
        )

    def _advance_head(self, position: int) -> None:
        self._head = max(self._head, position)

    async def _wake(self, types: frozenset[str]) -> None:
        for listener in self._listeners:
            listener(self._head)
        for typed in self._typed_listeners:
            typed(self._head, types)
        if self._notify:
            self._notify_position = self._head
            self._notify_types |= types
            if self._notifier is None:
                self._notifier = asyncio.create_task(self._send_notifications())

    async def _send_notifications(self) -> None:
        # Its own tiny transaction after the append committed: NOTIFY inside the append
        # would take the global notify lock at commit and serialize every writer.
        try:
            while self._notify_position is not None:
                position, self._notify_position = self._notify_position, None
                types, self._notify_types = self._notify_types, set()
                try:
                    await self._pool.execute(
                        "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, wake_up(position, types)
                    )
                except Exception as error:  # a lost wake-up only delays subscribers: they poll
                    if isinstance(error, asyncpg.PostgresError | OSError) or is_outage(error):
                        _log.warning("could not notify subscribers of position %d", position)
                    else:
                        _log.exception("could not notify subscribers of position %d", position)
        finally:
            self._notifier = None

    async def drain(self) -> None:
        """Wait for the wake-up of the last append to be sent (before the pool closes)."""
        if self._notifier is not None:
            await asyncio.gather(self._notifier, return_exceptions=True)

    def on_append(self, listener: Callable[[int], None]) -> None:
        """Call `listener(head position)` after every committed batch of this process."""
        self._listeners.append(listener)

    def on_appended(self, listener: Callable[[int, frozenset[str]], None]) -> None:
        """Call `listener(head position, event types)` after every committed batch of this
        process (the types of the events it appended)."""
        self._typed_listeners.append(listener)

    async def read_stream(self, stream: str, after_version: int = 0) -> list[RecordedEvent]:
        """The events of one stream in version order."""
        rows = await self._pool.fetch(
            f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - a constant column list
            "WHERE stream = $1 AND version > $2 ORDER BY version",
            stream,
            after_version,
        )
        return codec.recorded_page(rows)

    async def read_tails(self, after: dict[str, int]) -> dict[str, list[RecordedEvent]]:
        """Each stream's events past a version, in one round trip (streams with none omitted)."""
        rows = await self._pool.fetch(_TAILS_SQL, list(after), list(after.values()))
        tails: dict[str, list[RecordedEvent]] = {}
        for event in codec.recorded_page(rows):
            tails.setdefault(event.stream, []).append(event)
        return tails

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1_000,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        until: int | None = None,
    ) -> list[RecordedEvent]:
        """Events after a global position, in order, decoded."""
        rows = await self._pool.fetch(
            *_read_all_query(codec.COLUMNS, after, limit, types=types, stream=stream, until=until)
        )
        return codec.recorded_page(rows)

    async def read_stored(
        self,
        after: int = 0,
        limit: int = 1_000,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        until: int | None = None,
    ) -> list[StoredEvent]:
        """Events after a global position exactly as stored (for audit and export)."""
        rows = await self._pool.fetch(
            *_read_all_query(
                codec.CHAIN_COLUMNS, after, limit, types=types, stream=stream, until=until
            )
        )
        return [codec.stored_from_row(row) for row in rows]

    async def head(self) -> tuple[int, bytes]:
        """The newest position and its hash; (0, genesis) for an empty log."""
        row = await self._pool.fetchrow(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        )
        if row is None:
            return 0, bytes(32)
        return int(row["position"]), bytes(row["hash"])


def wake_up(position: int, types: set[str] | frozenset[str]) -> str:
    """The NOTIFY payload telling of appends up to `position` holding events of `types`:
    the position, a space, the types joined by commas (what `appended_types` reads)."""
    return f"{position} {','.join(sorted(types))}"


def appended_types(payload: str) -> frozenset[str] | None:
    """The event types a wake-up tells of; None when it does not say (any may have been)."""
    _, _, types = payload.partition(" ")
    return frozenset(types.split(",")) if types else None


def _recorded(batch: list[_Request], row: asyncpg.Record) -> list[RecordedEvent]:
    """A request's events as the append recorded them (none unless it appended)."""
    if row["o_status"] != "ok":
        return []
    request = batch[row["o_req"]]
    first_version = row["o_version"] - len(request.events) + 1
    return [
        RecordedEvent(
            position=row["o_first"] + i,
            stream=request.stream,
            version=first_version + i,
            event_id=request.event_ids[i],
            recorded_at=row["o_recorded_at"],
            event=event,
            meta=request.meta_struct,
        )
        for i, event in enumerate(request.events)
    ]


def _read_all_query(
    columns: str,
    after: int,
    limit: int,
    *,
    types: Sequence[str] | None,
    stream: str | None,
    until: int | None,
) -> tuple[object, ...]:
    clauses = ["position > $1"]
    params: list[object] = [after]
    if types:
        params.append(list(types))
        clauses.append(f"type = ANY(${len(params)})")
    if stream is not None:
        params.append(stream)
        clauses.append(f"stream = ${len(params)}")
    if until is not None:
        params.append(until)
        clauses.append(f"position <= ${len(params)}")
    params.append(limit)
    # within a stream, versions grow with positions: ordering by version lets the (stream,
    # version) index serve the read under any plan (a generic plan ordered by position walked
    # the primary key over the whole log)
    order = "version" if stream is not None else "position"
    sql = (
        f"SELECT {columns} FROM events WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed fragments
        f"ORDER BY {order} LIMIT ${len(params)}"
    )
    return (sql, *params)


def _settle(future: asyncio.Future[AppendResult], outcome: AppendResult | Exception) -> None:
    """Hand a request its outcome, unless its caller stopped waiting (a cancelled task): the
    batch's other requests still get theirs."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _batch_arguments(batch: list[_Request]) -> tuple[list[object], ...]:
    r_stream: list[object] = []
    r_expected: list[object] = []
    r_scope: list[object] = []
    r_key: list[object] = []
    r_digest: list[object] = []
    r_count: list[object] = []
    e_ids: list[object] = []
    e_types: list[object] = []
    e_data: list[object] = []
    e_meta: list[object] = []
    for request in batch:
        idem = request.idempotency
        r_stream.append(request.stream)
        r_expected.append(request.expected_version)
        r_scope.append(idem.scope if idem else None)
        r_key.append(idem.key if idem else None)
        r_digest.append(idem.request_digest if idem else None)
        r_count.append(len(request.types))
        e_ids.extend(request.event_ids)
        e_types.extend(request.types)
        e_data.extend(request.data)
        e_meta.extend([request.meta] * len(request.types))
    return (r_stream, r_expected, r_scope, r_key, r_digest, r_count, e_ids, e_types, e_data, e_meta)
