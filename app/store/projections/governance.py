"""Governance views: each model's folded state plus flat tables for SQL readers.

The model state row holds the same fold the deciders use (`domain.model.evolve`), so the
views cannot disagree with a replay of the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from app.store.codec import RecordedEvent, context_of
from domain import events as ev
from domain.model import evolve
from domain.registry import REGISTRY_TAGS, model_name
from domain.state import ModelState

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ModelState)
_policy_encoder = msgspec.json.Encoder()


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

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold the events into the states of the models they touch, then write the rows."""
        names = sorted({n for e in events if (n := model_name(e.event)) is not None})
        rows = await conn.fetch("SELECT name, state FROM model_states WHERE name = ANY($1)", names)
        states: dict[str, ModelState] = {r["name"]: decode_state(r["state"]) for r in rows}
        dirty: set[str] = set()
        last_snapshot: int = await conn.fetchval(
            "SELECT coalesce(max(position), 0) FROM registry_snapshots"
        )
        for recorded in events:
            event = recorded.event
            if isinstance(event, ev.PolicySet):
                await _policy(conn, recorded, event)
            else:
                name = model_name(event)
                assert name is not None  # the projection reads only registry events
                state = evolve(states.get(name), event, context_of(recorded))
                if state is not None:
                    states[name] = state
                    dirty.add(name)
                    await _flat_rows(conn, recorded, state)
            # the first registry event past each multiple of the interval: the same
            # positions however the log is batched, so a rebuild writes the same snapshots
            if recorded.position // self.snapshot_every > last_snapshot // self.snapshot_every:
                await _save_states(conn, [states[n] for n in dirty])
                dirty.clear()
                await _snapshot(conn, recorded.position)
                last_snapshot = recorded.position
        await _save_states(conn, [states[n] for n in dirty])


async def _save_states(conn: asyncpg.Connection, states: list[ModelState]) -> None:
    await conn.executemany(
        "INSERT INTO model_states (name, risk_tier, state, position) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (name) DO UPDATE SET state = excluded.state, position = excluded.position",
        [(s.name, s.risk_tier, _state_encoder.encode(s), s.updated_position) for s in states],
    )


async def _snapshot(conn: asyncpg.Connection, position: int) -> None:
    await conn.execute(
        "INSERT INTO snapshot_models (position, name, state) "
        "SELECT $1, name, state FROM model_states",
        position,
    )
    await conn.execute(
        "INSERT INTO snapshot_policies (position, risk_tier, version, policy) "
        "SELECT $1, risk_tier, version, policy FROM policies",
        position,
    )
    await conn.execute(
        "INSERT INTO registry_snapshots (position, models) SELECT $1, count(*) FROM model_states",
        position,
    )


async def _policy(conn: asyncpg.Connection, recorded: RecordedEvent, event: ev.PolicySet) -> None:
    await conn.execute(
        "INSERT INTO policies (risk_tier, version, policy, position) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (risk_tier) DO UPDATE SET version = excluded.version, "
        "policy = excluded.policy, position = excluded.position",
        event.risk_tier,
        recorded.version,
        _policy_encoder.encode(event.policy).decode(),
        recorded.position,
    )


async def _flat_rows(conn: asyncpg.Connection, recorded: RecordedEvent, state: ModelState) -> None:
    event, at, position = recorded.event, recorded.recorded_at, recorded.position
    number = getattr(event, "version", None)
    if (
        isinstance(number, int)
        and number in state.versions
        and not isinstance(event, ev.JobRequested)
    ):
        version = state.versions[number]
        await conn.execute(
            "INSERT INTO versions (name, version, format, artifact_sha256, library_sha256, "
            "registered_at, registered_by, retired_at, position) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name, version) DO UPDATE "
            "SET library_sha256 = excluded.library_sha256, retired_at = excluded.retired_at, "
            "position = excluded.position",
            state.name,
            number,
            version.format,
            version.artifact_sha256,
            version.compiled.library_sha256 if version.compiled else None,
            version.registered_at,
            version.registered_by,
            version.retired_at,
            position,
        )
    if isinstance(event, ev.DeploymentChanged):
        slot = state.deployments[event.environment]
        await conn.execute(
            "INSERT INTO deployments (name, environment, champion, challenger, strategy, "
            "traffic_percent, updated_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (name, environment) DO UPDATE SET champion = excluded.champion, "
            "challenger = excluded.challenger, strategy = excluded.strategy, "
            "traffic_percent = excluded.traffic_percent, updated_at = excluded.updated_at, "
            "position = excluded.position",
            state.name,
            event.environment,
            slot.champion,
            slot.challenger,
            slot.strategy,
            slot.traffic_percent,
            at,
            position,
        )
        await conn.execute(
            "INSERT INTO deployment_history (position, name, environment, action, version, "
            "champion, challenger, strategy, traffic_percent, actor, reason, recorded_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            position,
            state.name,
            event.environment,
            event.action,
            event.version,
            event.champion,
            event.challenger,
            event.strategy,
            event.traffic_percent,
            recorded.meta.actor,
            event.reason,
            at,
        )
    elif isinstance(event, (ev.VersionApproved, ev.VersionRejected)):
        await conn.execute(
            "INSERT INTO approvals (position, name, version, approver, decision, comment, "
            "policy_version, expires_at, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            position,
            state.name,
            event.version,
            event.approver,
            "approve" if isinstance(event, ev.VersionApproved) else "reject",
            event.comment,
            event.policy_version,
            getattr(event, "expires_at", None),
            at,
        )
    elif isinstance(event, ev.ApprovalRevoked):
        await conn.execute(
            "UPDATE approvals SET revoked_reason = $4 WHERE name = $1 AND version = $2 "
            "AND approver = $3 AND revoked_reason IS NULL",
            state.name,
            event.version,
            event.approver,
            event.reason,
        )
    elif isinstance(event, ev.DriftDetected):
        await conn.execute(
            "INSERT INTO drift_alerts (position, name, version, statistic, value, threshold, "
            "severity, feature, environment, recorded_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            position,
            state.name,
            event.version,
            event.statistic,
            event.value,
            event.threshold,
            event.severity,
            event.feature,
            event.environment,
            at,
        )
