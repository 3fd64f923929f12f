"""Governance views: each model's folded state plus flat tables for SQL readers.

The model state row holds the same fold the deciders use (`domain.model.evolve`), so the
views cannot disagree with a replay of the log.

What a page of events changes is gathered per table and written in one statement each
(COPY for the append-only tables), and the folded states stay in memory between pages:
each changed state is encoded and written once per transaction (`flush`), never once per
event.

Snapshots are per model: a model's state is kept in `model_snapshots` each time its stream
version passes a mark of its `SnapshotSchedule`. An as-of read starts each model from its
latest snapshot at or before the instant and replays less than one interval of its stream.
What snapshots cost grows with the log, not with the log times the registry, as copies of
the whole registry did. The marks depend on the stream versions alone, so a rebuild,
however it is paged, writes the same rows.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

import asyncpg
import msgspec

from app.store.codec import RecordedEvent, context_of
from app.store.projections.governance_rows import AppendedRows, FlatRows
from app.store.projector import paused_gc
from domain import events as ev
from domain.model import evolve
from domain.registry import MODEL_EVENT_TYPES, REGISTRY_TAGS
from domain.state import ModelState

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ModelState)

_SAVE_STATES = (
    "INSERT INTO model_states (name, risk_tier, state, position) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (name) DO UPDATE SET state = excluded.state, position = excluded.position"
)


_MODEL_TYPES = frozenset(MODEL_EVENT_TYPES)
# the most model states kept between inline transactions (more: all are read again)
_KEPT_MODELS = 256


def _model_of(event: ev.Event) -> str | None:
    # `domain.registry.model_name` by exact type (event classes are final), many times faster
    if type(event) in _MODEL_TYPES:
        name: str = event.name  # type: ignore[attr-defined]
        return name
    return None


def _to_read(events: Sequence[RecordedEvent]) -> set[str]:
    """The models whose states a page needs from model_states: those it names, except the
    ones it registers (a stream's first event: there is no earlier state)."""
    names: set[str] = set()
    new: set[str] = set()
    for recorded in events:
        name = _model_of(recorded.event)
        if name is None or name in names or name in new:
            continue
        if type(recorded.event) is ev.ModelRegistered and recorded.version == 1:
            new.add(name)
        else:
            names.add(name)
    return names


class SnapshotSchedule:
    """The stream versions past which a model's state is snapshotted.

    Every `every` events while the stream is short, then every eighth of its length: a
    state holds all of a model's versions, so fixed intervals would store a long-lived
    model's state times its length; growing ones store a few times its state, and an as-of
    read replays at most the larger of `every` and an eighth of the stream.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self._marks = [every]

    def marks(self, upto: int) -> list[int]:
        """The marks up to stream version `upto`."""
        marks = self._marks
        while marks[-1] <= upto:
            marks.append(marks[-1] + max(self.every, marks[-1] // 8))
        return marks[: bisect.bisect_right(marks, upto)]

    def due(self, before: int, after: int) -> bool:
        """Whether going from stream version `before` to `after` passed a mark."""
        marks = self._marks
        while marks[-1] <= after:
            marks.append(marks[-1] + max(self.every, marks[-1] // 8))
        return marks[bisect.bisect_right(marks, before)] <= after


def decode_state(raw: bytes) -> ModelState:
    """A model state row's document."""
    return _state_decoder.decode(raw)


class StateEncoder:
    """Encodes model states, re-encoding only the parts changed since the last encoding.

    Versions and drift alerts are most of a state's bytes and change rarely: an event
    changes at most the version it names (`domain.model` keeps to that; tested), and
    alerts are only appended. Parts encoded before are reused as raw msgpack, so the bytes
    are those of encoding the whole state (tested), in a fraction of the time.
    """

    def __init__(self) -> None:
        self._versions: dict[str, dict[int, msgspec.Raw]] = {}
        self._alerts: dict[str, list[msgspec.Raw]] = {}

    def forget(self) -> None:
        """Drop every part kept."""
        self._versions.clear()
        self._alerts.clear()

    def folded(self, name: str, event: ev.Event) -> None:
        """Model `name`'s state has folded `event`: drop the parts it may have changed."""
        if type(event) is ev.ModelRegistered:  # a new state
            self._versions.pop(name, None)
            self._alerts.pop(name, None)
        elif type(number := getattr(event, "version", None)) is int:
            versions = self._versions.get(name)
            if versions is not None:
                versions.pop(number, None)

    def encode(self, state: ModelState) -> bytes:
        """The state's msgpack, as `msgspec.msgpack.encode(state)` gives it."""
        cached = self._versions.setdefault(state.name, {})
        versions = {}
        for number, version in state.versions.items():
            part = cached.get(number)
            if part is None:
                part = cached[number] = msgspec.Raw(_state_encoder.encode(version))
            versions[number] = part
        alerts = self._alerts.setdefault(state.name, [])
        alerts += [msgspec.Raw(_state_encoder.encode(a)) for a in state.drift_alerts[len(alerts) :]]
        parts = msgspec.structs.replace(
            state, versions=versions, drift_alerts=alerts[: len(state.drift_alerts)]
        )
        return _state_encoder.encode(parts)


class GovernanceProjection:
    """Projects model and policy events into the governance views."""

    name = "governance"
    types = tuple(REGISTRY_TAGS)
    tables = (
        "model_states",
        "versions",
        "deployments",
        "deployment_history",
        "approvals",
        "drift_alerts",
        "policies",
        "model_snapshots",
    )

    def __init__(self, snapshot_every: int = 250) -> None:
        self.snapshots = SnapshotSchedule(snapshot_every)
        # The states of this transaction's models, kept from page to page. Beyond the
        # transaction only inline (`resume`), and only the last few models: the whole
        # registry would stay in memory (and in every collection of the cyclic GC), and
        # another process may move the rows meanwhile (the checkpoint then moved too).
        self._states: dict[str, ModelState] = {}
        self._keeping = False  # inline: what the transaction read is kept after its commit
        self._kept_at: int | None = None  # the checkpoint the kept states are current at
        self._looked_up: set[str] = set()  # names whose model_states row was read
        self._streams_seen: set[str] = set()  # streams whose models were looked up
        self._dirty: set[str] = set()  # changed since model_states was written
        self._encoder = StateEncoder()
        self._snapshots: list[tuple[str, int, int, bytes]] = []  # (name, version, position, state)
        self._rows = FlatRows()
        self._writing: asyncio.Task[None] | None = None  # the last page's rows, in flight

    def begin(self) -> None:
        """A transaction starts: whatever an unfinished one left is dropped."""
        assert self._writing is None, "the projector settles writes before a rollback"
        self._keeping, self._kept_at = False, None
        self._forget()
        self._rows = FlatRows()

    def resume(self, checkpoint: int) -> None:
        """An inline transaction starts at `checkpoint`: the states this process's last one
        committed are the rows' own if the checkpoint is still where that one left it
        (nothing else projected since), and save reading and decoding them again."""
        kept = checkpoint == self._kept_at and len(self._states) <= _KEPT_MODELS
        if not kept:
            self.begin()
        assert self._writing is None, "the projector settles writes before a rollback"
        self._keeping, self._kept_at = True, None  # current again only once this commits
        self._dirty.clear()
        self._snapshots = []
        self._rows = FlatRows()

    def pass_over(self, checkpoint: int) -> None:
        """A transaction moves the checkpoint from `checkpoint` past none of the view's events:
        the kept states stay current past it only if they were current at `checkpoint` (else
        another process projected in between, and they are read again next time)."""
        assert self._writing is None, "the projector settles writes before a rollback"
        self._keeping = self._kept_at == checkpoint
        self._kept_at = None  # current again only once this commits

    def kept_until(self, position: int) -> None:
        """The inline transaction projecting up to `position` committed."""
        if self._keeping:
            self._kept_at = position

    def _forget(self) -> None:
        self._states.clear()
        self._looked_up.clear()
        self._streams_seen.clear()
        self._dirty.clear()
        self._encoder.forget()
        self._snapshots = []

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold the events into the states of the models they touch; write the flat rows.

        The rows are written by a task that runs while the caller decodes and this folds
        the next page (the database works as Python folds); `settle` waits for it.
        """
        streams = {e.stream for e in events}  # cheaper than the model names
        if not streams <= self._streams_seen:
            names = _to_read(events)
            await self.settle()  # the connection is free for the read
            await self._load(conn, names)
            self._streams_seen |= streams
        self._fold(events)
        rows, snapshots = self._rows.take_appended(), self._snapshots
        self._snapshots = []
        await self.settle()
        self._writing = asyncio.create_task(self._write(conn, rows, snapshots))

    async def settle(self) -> None:
        """Wait for the rows still being written (the connection is free after)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _write(
        self,
        conn: asyncpg.Connection,
        rows: AppendedRows,
        snapshots: list[tuple[str, int, int, bytes]],
    ) -> None:
        await rows.write(conn)
        if snapshots:
            await conn.copy_records_to_table(
                "model_snapshots",
                records=snapshots,
                columns=["name", "stream_version", "position", "state"],
            )

    def _fold(self, events: Sequence[RecordedEvent]) -> None:
        rows, states, schedule = self._rows, self._states, self.snapshots
        with paused_gc():
            for recorded in events:
                event = recorded.event
                if type(event) is ev.PolicySet:
                    assert isinstance(event, ev.PolicySet)
                    rows.policy(recorded, event)
                    continue
                # the projection reads only registry events: the others are model events
                name: str = event.name  # type: ignore[union-attr]
                state = states.get(name)
                before = 0 if state is None else state.stream_version
                state = evolve(state, event, context_of(recorded))
                if state is None:
                    continue
                states[name] = state
                self._dirty.add(name)
                self._encoder.folded(name, event)
                rows.add(recorded, state)
                if schedule.due(before, state.stream_version):
                    encoded = self._encoder.encode(state)
                    self._snapshots.append((name, state.stream_version, recorded.position, encoded))

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write the upserted rows and the model states changed since the last flush."""
        await self.settle()
        await self._rows.write_upserted(conn)
        states = [self._states[n] for n in sorted(self._dirty)]
        await _save_states(conn, states, [self._encoder.encode(state) for state in states])
        if self._keeping:
            self._dirty.clear()
        else:
            self._forget()

    async def _load(self, conn: asyncpg.Connection, names: set[str]) -> None:
        """The states of `names` not read yet in this transaction, from model_states."""
        unread = [n for n in names if n not in self._looked_up]
        if not unread:
            return
        rows = await conn.fetch("SELECT name, state FROM model_states WHERE name = ANY($1)", unread)
        self._states.update((r["name"], decode_state(r["state"])) for r in rows)
        self._looked_up.update(unread)


async def _save_states(
    conn: asyncpg.Connection, states: list[ModelState], encoded: list[bytes]
) -> None:
    # executemany (one prepared statement, pipelined), not unnest: a bytea[] of states is
    # copied twice more on the server and took twice as long
    await conn.executemany(
        _SAVE_STATES,
        [
            (state.name, state.risk_tier, raw, state.updated_position)
            for state, raw in zip(states, encoded, strict=True)
        ],
    )
