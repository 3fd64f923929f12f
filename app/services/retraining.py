"""The retraining reactor: follows the log for critical drift and performance alerts and
hands each to its model's retraining policy (`domain.retraining`).

It keeps its position in `projection_checkpoints` and moves it only after every alert up to
there was decided, so an alert recorded while no reactor ran is decided when one starts.
The checkpoint row stays locked while deciding: reactors in several processes take turns.
A decision's event ids are fixed by the alert's check, so deciding an alert again (a crash
before the checkpoint moved) appends nothing: one alert, at most one retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec

from app.outages import report_failure
from app.services.datasets import Datasets
from app.services.governance import Governance
from app.store import codec
from app.store.codec import RecordedEvent
from app.store.events import EventStore
from app.store.projector import lock_checkpoint
from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.errors import ConcurrencyConflict, DomainError
from domain.policy import RetrainingPolicy

CHECKPOINT = "retraining"
ACTOR = ev.EventMeta(actor="system:retraining", role="admin")
_PAGE = 200
# the alerts it decides on (and the only appends it wakes for)
ALERTS = ("drift.detected", "performance.alert")
_log = logging.getLogger("model_ledger.retraining")

# the checkpoint, and whether a critical alert follows it up to $3: a probe of the
# (type, position) index over the alerts since the checkpoint
_PROBE = (
    "WITH c AS (SELECT coalesce((SELECT position FROM projection_checkpoints "
    "WHERE name = $1), 0) AS position) "
    "SELECT c.position, EXISTS (SELECT 1 FROM events e WHERE e.type = ANY($2) "
    "AND e.position > c.position AND e.position <= $3 "
    "AND e.data->>'severity' = 'critical') AS pending FROM c"
)
# nothing to decide up to $2: the checkpoint may pass it (another reactor's lock is waited for)
_SKIP = (
    "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) "
    "DO UPDATE SET position = greatest(projection_checkpoints.position, excluded.position)"
)
# how far the log may run past the checkpoint without a critical alert before the checkpoint
# is moved anyway (so the probe's range of non-critical alerts stays short, at one write per
# this many events)
_SKIP_AHEAD = 1_000
_PAGE_SQL = (
    f"SELECT {codec.COLUMNS} FROM events WHERE type = ANY($1) "  # noqa: S608 - fixed fragments
    "AND position > $2 AND position <= $3 AND data->>'severity' = 'critical' "
    "ORDER BY position LIMIT $4"
)
# the model's retraining policy in force (its latest setting), if any: by the (type,
# position) index, policy settings being few, rather than backwards through a long stream
_POLICY_SQL = (
    "SELECT data::text FROM events WHERE type = 'retraining.policy_set' AND stream = $1 "
    "ORDER BY position DESC LIMIT 1"
)
_decode_policy = msgspec.json.Decoder(ev.RetrainingPolicySet).decode


class RetrainingReactor:
    """Decides the critical alerts after its checkpoint by their models' retraining policies."""

    def __init__(self, store: EventStore, governance: Governance, datasets: Datasets) -> None:
        self._store = store
        self._governance = governance
        self._datasets = datasets

    async def react(self) -> int:
        """Decide every critical alert not yet decided; returns how many were looked at."""
        head, _ = await self._store.head()
        probe = await self._store.pool.fetchrow(_PROBE, CHECKPOINT, list(ALERTS), head)
        if not probe["pending"]:
            if head - probe["position"] > _SKIP_AHEAD:
                await self._store.pool.execute(_SKIP, CHECKPOINT, head)
            return 0
        seen = 0
        while True:
            async with self._store.pool.acquire() as conn, conn.transaction():
                checkpoint = await lock_checkpoint(conn, CHECKPOINT)
                if checkpoint >= head:
                    return seen
                rows = await conn.fetch(_PAGE_SQL, list(ALERTS), checkpoint, head, _PAGE)
                for alert in codec.recorded_page(rows):
                    await self._decide(alert)
                seen += len(rows)
                reached = head if len(rows) < _PAGE else rows[-1]["position"]
                await conn.execute(
                    "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                    CHECKPOINT,
                    reached,
                )

    async def _decide(self, recorded: RecordedEvent) -> None:
        alert = recorded.event
        assert isinstance(alert, ev.DriftDetected | ev.PerformanceAlert)
        policy = await self._policy(alert.name)
        if policy is None or not policy.enabled:
            return  # most models have none: no command, nothing read but one row
        names = [
            policy.dataset,
            *([policy.evaluation_dataset] if policy.evaluation_dataset else []),
        ]
        cause = str(recorded.event_id)
        command = cmd.RespondWithRetraining(
            name=alert.name,
            alert=alert,
            alert_event_id=cause,
            alert_position=recorded.position,
            datasets=await self._datasets.latest(names),
        )
        meta = msgspec.structs.replace(
            ACTOR, causation_id=cause, correlation_id=recorded.meta.correlation_id or cause
        )
        try:
            await self._governance.handle(command, meta)
        except ConcurrencyConflict:
            raise  # the stream kept moving: decided again on the next round
        except DomainError as error:  # the model cannot take it: nothing to retry
            _log.warning("retraining for alert %s not decided: %s", cause, error.detail)

    async def _policy(self, name: str) -> RetrainingPolicy | None:
        text = await self._store.pool.fetchval(_POLICY_SQL, model_stream(name))
        return None if text is None else _decode_policy(text).policy

    async def run(self, wait: Callable[[float], Awaitable[None]]) -> None:
        """React each time `wait(seconds)` returns (the log grew), logging failures."""
        while True:
            try:
                await self.react()
            except Exception as error:  # the database away, or a bug: tried again later
                report_failure(_log, "retraining reactor", error)
            await wait(5.0)
