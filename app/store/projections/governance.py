"""Governance views: each model's folded state plus flat tables for SQL readers.

The model state row holds the same fold the deciders use (`domain.model.evolve`), so the
views cannot disagree with a replay of the log.

What a page of events changes is gathered per table and written in one statement each
(COPY for the append-only tables), and the folded states stay in memory between pages:
each changed state is encoded and written once per transaction (`flush`) and once per
registry snapshot, never once per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from app.store.codec import RecordedEvent, context_of
from app.store.projections.governance_rows import FlatRows
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


def _model_of(event: ev.Event) -> str | None:
    # `domain.registry.model_name` by exact type (event classes are final), many times faster
    if type(event) in _MODEL_TYPES:
        name: str = event.name  # type: ignore[attr-defined]
        return name
    return None


def decode_state(raw: bytes) -> ModelState:
    """A model state row's document."""
    return _state_decoder.decode(raw)


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
        "registry_snapshots",
        "snapshot_models",
        "snapshot_policies",
    )

    def __init__(self, snapshot_every: int = 10_000) -> None:
        self.snapshot_every = snapshot_every
        # The states of this transaction's models, kept from page to page. Not beyond the
        # transaction: the whole registry would stay in memory (and in every collection
        # of the cyclic GC), and another process may move the rows meanwhile.
        self._states: dict[str, ModelState] = {}
        self._looked_up: set[str] = set()  # names whose model_states row was read
        self._dirty: set[str] = set()  # changed since model_states was written
        self._encoded: dict[str, bytes] = {}  # dirty states encoded (for a snapshot) since
        self._rows = FlatRows()
        self._lz4: bool | None = None  # whether the server can compress with lz4
        self._compression_chosen = False  # in this transaction

    def begin(self) -> None:
        """A transaction starts: whatever an unfinished one left is dropped."""
        self._forget()
        self._rows = FlatRows()
        self._compression_chosen = False

    def _forget(self) -> None:
        self._states.clear()
        self._looked_up.clear()
        self._dirty.clear()
        self._encoded.clear()

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold the events into the states of the models they touch; write the flat rows."""
        await self._load(conn, {n for e in events if (n := _model_of(e.event)) is not None})
        last_snapshot: int = await conn.fetchval(
            "SELECT coalesce(max(position), 0) FROM registry_snapshots"
        )
        every, start = self.snapshot_every, 0
        while start < len(events):
            # up to the first registry event past the next multiple of the interval: the
            # same positions however the log is batched, so a rebuild writes the same
            # snapshots
            end = start
            while end < len(events) and events[end].position // every <= last_snapshot // every:
                end += 1
            snapshot = end < len(events)
            self._fold(events[start : end + 1])
            await self._rows.write_appended(conn)  # before a snapshot: it copies policies
            if snapshot:
                last_snapshot = events[end].position
                await self._snapshot(conn, last_snapshot)
            start = end + 1

    def _fold(self, events: Sequence[RecordedEvent]) -> None:
        rows = self._rows
        with paused_gc():
            for recorded in events:
                event = recorded.event
                if type(event) is ev.PolicySet:
                    assert isinstance(event, ev.PolicySet)
                    rows.policy(recorded, event)
                    continue
                name = _model_of(event)
                assert name is not None  # the projection reads only registry events
                state = evolve(self._states.get(name), event, context_of(recorded))
                if state is not None:
                    self._states[name] = state
                    self._dirty.add(name)
                    self._encoded.pop(name, None)
                    rows.add(recorded, state)

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write the upserted rows and the model states changed since the last flush."""
        await self._rows.write_upserted(conn)
        names = sorted(self._dirty)
        await self._choose_compression(conn)
        await _save_states(conn, [self._states[n] for n in names], self._encode(names))
        self._forget()

    async def _load(self, conn: asyncpg.Connection, names: set[str]) -> None:
        """The states of `names` not read yet in this transaction, from model_states."""
        unread = [n for n in names if n not in self._looked_up]
        if not unread:
            return
        rows = await conn.fetch("SELECT name, state FROM model_states WHERE name = ANY($1)", unread)
        self._states.update((r["name"], decode_state(r["state"])) for r in rows)
        self._looked_up.update(unread)

    async def _choose_compression(self, conn: asyncpg.Connection) -> None:
        # States are large and rewritten by every transaction and snapshot: lz4 compresses
        # them about 5x faster than PostgreSQL's default pglz, to the same size.
        if self._compression_chosen:
            return
        if self._lz4 is None:
            self._lz4 = await conn.fetchval(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        if self._lz4:
            await conn.execute("SET LOCAL default_toast_compression = lz4")
        self._compression_chosen = True

    def _encode(self, names: list[str]) -> list[bytes]:
        encoded = self._encoded
        for name in names:
            if name not in encoded:
                encoded[name] = _state_encoder.encode(self._states[name])
        return [encoded[n] for n in names]

    async def _snapshot(self, conn: asyncpg.Connection, position: int) -> None:
        # The registry at `position`: the states changed in this transaction from memory,
        # every other model's from its model_states row (which is current).
        names = sorted(self._dirty)
        await self._choose_compression(conn)
        status = await conn.execute(
            "INSERT INTO snapshot_models (position, name, state) "
            "SELECT $1, name, state FROM model_states WHERE NOT (name = ANY($2))",
            position,
            names,
        )
        if names:
            await conn.copy_records_to_table(
                "snapshot_models",
                records=zip([position] * len(names), names, self._encode(names), strict=True),
                columns=["position", "name", "state"],
            )
        await conn.execute(
            "INSERT INTO snapshot_policies (position, risk_tier, version, policy) "
            "SELECT $1, risk_tier, version, policy FROM policies",
            position,
        )
        await conn.execute(
            "INSERT INTO registry_snapshots (position, models) VALUES ($1, $2)",
            position,
            int(status.split()[-1]) + len(names),
        )


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
