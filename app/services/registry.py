"""Queries over the governance views: current from the projections, past by replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from app.services.commands import Outcome
from app.services.dossier import Dossier, build_dossier
from app.services.views import ModelView, render_model
from app.store import codec
from app.store.codec import RecordedEvent, context_of
from app.store.events import EventStore
from app.store.projections.governance import decode_state
from app.store.projector import paused_gc
from domain.decide import model_stream, require_version
from domain.errors import InvalidInput, NotFound
from domain.policy import Policy, PolicyBook
from domain.registry import REGISTRY_TAGS, RegistryState, apply
from domain.state import ModelState, VersionState

# as-of replays: the streams of this many models per query
_REPLAY_MODELS = 100
_MODEL_TAGS = [tag for tag in REGISTRY_TAGS if tag != "policy.set"]
_SNAPSHOTS_AT = (
    "SELECT DISTINCT ON (name) name, stream_version, state FROM model_snapshots "
    "WHERE position <= $1 AND ($2::text[] IS NULL OR name = ANY($2)) "
    "ORDER BY name, stream_version DESC"
)
_POLICIES_AT = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed fragments
    "WHERE type = 'policy.set' AND position <= $1 ORDER BY position"
)
# each model's events after its snapshot, up to the instant, through (stream, version)
_STREAM_TAILS = f"""
SELECT tail.* FROM unnest($1::text[], $2::bigint[]) AS s(stream, after)
CROSS JOIN LATERAL (
  SELECT {codec.COLUMNS} FROM events
  WHERE stream = s.stream AND version > s.after AND position <= $3 AND type = ANY($4)
  ORDER BY version
) AS tail
"""  # noqa: S608 - fixed fragments
_MODEL_AND_HEAD = (
    "SELECT EXISTS (SELECT 1 FROM model_states WHERE name = $1), "
    "(SELECT coalesce(max(position), 0) FROM events)"
)
# One JSON object per event, in `EventOut`'s field order (`stream` is $3, JSON-encoded
# once; a `type` is an event tag, never in need of escaping), `data` and `meta` the exact
# stored text, `recorded_at` as msgspec writes it (microseconds only when there are any).
# Rows, not one aggregate: they stream. The subquery scans by its (stream, version) index
# alone (OFFSET 0 keeps the cut out of it): a generic plan would otherwise AND in a bitmap
# of the primary key up to the cut.
_HISTORY_SQL = """
SELECT convert_to(concat(
  '{"position":', position, ',"stream":', $3::text, ',"version":', version,
  ',"event_id":"', event_id, '","type":"', type, '","data":', data, ',"meta":', meta,
  ',"recorded_at":"', replace(
    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z'
  ),
  '","prev_hash":"', encode(prev_hash, 'hex'), '","hash":"', encode(hash, 'hex'), '"}'
), 'UTF8')
FROM (SELECT * FROM events WHERE stream = $1 ORDER BY version OFFSET 0) AS stream
WHERE position <= $2 AND ($4::text IS NULL OR type = $4)
ORDER BY version
"""
_policy_decoder = msgspec.json.Decoder(Policy)


class Instant(msgspec.Struct, frozen=True):
    """A point of the log: a position and the time of its event."""

    position: int
    time: datetime | None


class RegistryView(msgspec.Struct, frozen=True, kw_only=True):
    as_of: Instant
    models: list[ModelView]


_MODEL_AND_POLICIES = (
    "SELECT (SELECT state FROM model_states WHERE name = $1) AS state, "
    "(SELECT coalesce(json_agg(json_build_array(risk_tier, version, policy)), '[]') "
    "FROM policies)::text AS policies"
)


class Registry:
    """Reads of the registry, now or as of any past instant."""

    def __init__(
        self, store: EventStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    async def instant(self, as_of: str | None) -> Instant:
        """Resolve `as_of` (a position, or an RFC 3339 time; None: now) to an instant."""
        if _is_time(as_of):
            position = await self._position_at_time(str(as_of), self._store.pool)
        else:
            head, _ = await self._store.head()
            position = head if not as_of else min(int(as_of), head)
        time = await self._store.pool.fetchval(
            "SELECT recorded_at FROM events WHERE position = $1", position
        )
        return Instant(position, time)

    async def _position_at_time(self, as_of: str, db: asyncpg.Pool | asyncpg.Connection) -> int:
        try:
            moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError as error:
            raise InvalidInput(
                "as_of must be a position or an RFC 3339 time", field="as_of"
            ) from error
        if moment.tzinfo is None:
            raise InvalidInput("as_of time needs a timezone (e.g. Z)", field="as_of")
        position: int = await db.fetchval(
            "SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= $1", moment
        )
        return position

    async def current_state(self, names: list[str] | None = None) -> RegistryState:
        """The registry (or the models `names`) from the projections, caught up by writers."""
        rows = await self._store.pool.fetch(
            "SELECT state FROM model_states WHERE $1::text[] IS NULL OR name = ANY($1) "
            "ORDER BY name",
            names,
        )
        with paused_gc():  # the states are acyclic: collections would only walk them again
            models = {s.name: s for s in (decode_state(r["state"]) for r in rows)}
        return RegistryState(models=models, policies=await self.policies())

    async def policies(self) -> PolicyBook:
        """The policies in force (from the projection)."""
        book = PolicyBook()
        rows = await self._store.pool.fetch("SELECT risk_tier, version, policy::text FROM policies")
        for row in rows:
            book.set(row[0], _policy_decoder.decode(row[2]), row[1])
        return book

    async def state_at(self, position: int, names: list[str] | None = None) -> RegistryState:
        """The registry (or the models `names`) as a replay of the log up to `position`.

        Each model starts from its latest snapshot at or before `position` (or from nothing)
        and replays the rest of its stream up to there; policies replay from the start of
        their streams (a handful of events). Models are independent folds, so each stream
        is read through its own (stream, version) index range.
        """
        pool = self._store.pool
        registry = RegistryState(position=position)
        async with pool.acquire() as conn:
            snapshots = {
                row[0]: (row[1], row[2]) for row in await conn.fetch(_SNAPSHOTS_AT, position, names)
            }
            if names is None:
                names = [row[0] for row in await conn.fetch("SELECT name FROM model_states")]
            policies = await conn.fetch(_POLICIES_AT, position)
        for recorded in codec.recorded_page(policies):
            apply(registry, recorded.event, context_of(recorded))
        for start in range(0, len(names), _REPLAY_MODELS):
            chunk = names[start : start + _REPLAY_MODELS]
            after = [snapshots[n][0] if n in snapshots else 0 for n in chunk]
            rows = await pool.fetch(
                _STREAM_TAILS, [model_stream(n) for n in chunk], after, position, _MODEL_TAGS
            )
            with paused_gc():
                for name in chunk:
                    if name in snapshots:
                        registry.models[name] = decode_state(snapshots[name][1])
                for recorded in codec.recorded_page(rows):
                    apply(registry, recorded.event, context_of(recorded))
        registry.position, registry.time = position, None  # streams replayed out of log order
        return registry

    async def view(self, as_of: str | None, names: list[str] | None = None) -> RegistryView:
        """The whole registry (or the models `names`), now or as it was at `as_of`.

        Models named but not registered yet at `as_of` are left out; a name no model ever
        had is NotFound.
        """
        if names:
            known = await self._store.pool.fetch(
                "SELECT name FROM model_states WHERE name = ANY($1)", names
            )
            if missing := sorted(set(names) - {row[0] for row in known}):
                raise NotFound(f"no model named {missing[0]!r}")
        instant = await self.instant(as_of)
        head, _ = await self._store.head()
        if as_of is None or instant.position >= head:
            state, now = await self.current_state(names or None), self._clock()
        else:
            state = await self.state_at(instant.position, names or None)
            now = instant.time or self._clock()
        with paused_gc():  # a view of the whole registry is many acyclic objects
            models = [render_model(m, state.policies, now) for _, m in sorted(state.models.items())]
        return RegistryView(as_of=instant, models=models)

    async def model_state(self, name: str) -> tuple[ModelState, PolicyBook]:
        """One model's current state with the policies in force (one read), or NotFound."""
        row = await self._store.pool.fetchrow(_MODEL_AND_POLICIES, name)
        if row["state"] is None:
            raise NotFound(f"no model named {name!r}")
        book = PolicyBook()
        for tier, version, policy in msgspec.json.decode(row["policies"]):
            book.set(tier, msgspec.convert(policy, Policy), version)
        return decode_state(row["state"]), book

    async def answer(self, name: str, outcome: Outcome) -> tuple[ModelState, PolicyBook]:
        """The model's state after a command, for its response: as the command folded it
        when it holds what the response shows (the policy of its tier matters only to its
        versions), else as `model_state` reads it."""
        model = outcome.model
        if model is None or model.name != name or (model.versions and outcome.policy is None):
            return await self.model_state(name)
        book = PolicyBook()
        if outcome.policy is not None:
            book.set(model.risk_tier, *outcome.policy)
        return model, book

    @staticmethod
    def version_of(model: ModelState, number: int) -> VersionState:
        """One version of a model's state, or NotFound."""
        return require_version(model, number)

    async def version(self, name: str, number: int) -> tuple[ModelState, VersionState, PolicyBook]:
        """One version with its model's current state, or NotFound."""
        model, policies = await self.model_state(name)
        return model, require_version(model, number), policies

    async def dossier(self, name: str, number: int, now: datetime) -> Dossier:
        """The model card of a version, as of the log's head."""
        model, policies = await self.model_state(name)
        events = await self._store.read_stream(model_stream(name))
        head, _ = await self._store.head()
        return build_dossier(model, number, policies, events, now=now, as_of_position=head)

    async def caused_by(self, name: str, cause: RecordedEvent) -> list[RecordedEvent]:
        """The events of a model's stream recorded because of `cause` (a policy's actions)."""
        following = await self._store.read_all(cause.position, 100, stream=model_stream(name))
        return [e for e in following if e.meta.causation_id == str(cause.event_id)]

    async def history(
        self, name: str, as_of: str | None, event_type: str | None
    ) -> tuple[int, bytes]:
        """A model's events as stored, up to an instant, optionally of one type.

        Returns the instant's position and the events as one JSON array of the API's event
        items, rendered by the database: nothing is decoded on the way.
        """
        stream = model_stream(name)
        async with self._store.pool.acquire() as conn:
            known, head = await conn.fetchrow(_MODEL_AND_HEAD, name)
            if not known:  # before a malformed as_of is a 422
                raise NotFound(f"no model named {name!r}")
            if _is_time(as_of):
                cut = await self._position_at_time(str(as_of), conn)
            else:
                cut = head if not as_of else min(int(as_of), head)
            rows = await conn.fetch(
                _HISTORY_SQL, stream, cut, msgspec.json.encode(stream).decode(), event_type
            )
        return cut, b"[" + b",".join([row[0] for row in rows]) + b"]"


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Leaf-level differences between two JSON-like values: what changed between instants."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}/{key}"
            if key not in before:
                changes.append({"path": sub, "change": "added", "after": after[key]})
            elif key not in after:
                changes.append({"path": sub, "change": "removed", "before": before[key]})
            else:
                changes += diff(before[key], after[key], sub)
        return changes
    if before != after:
        return [{"path": path, "change": "changed", "before": before, "after": after}]
    return []


def keyed(view: RegistryView) -> dict[str, Any]:
    """A registry view as plain data keyed by model name and version number (for diffs)."""
    data = msgspec.to_builtins(view.models)
    return {
        model["name"]: {**model, "versions": {str(v["version"]): v for v in model["versions"]}}
        for model in data
    }


def _is_time(as_of: str | None) -> bool:
    return bool(as_of) and not (str(as_of).isascii() and str(as_of).isdigit())
