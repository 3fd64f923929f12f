"""Governance: commands through the one command path, and the reads deciders make.

Shared by the HTTP layer and the workers. `handle` appends what a command decided and
waits for the views to include it (read-your-writes) before returning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import msgspec

from app.services.commands import DEFAULT_PATIENCE_SECONDS, Commands, Outcome
from app.store.codec import context_of
from app.store.events import EventStore, Idempotency
from app.store.projector import Projector
from domain import commands as cmd
from domain import decide, deploy
from domain.events import DriftDetected, EventMeta, PolicySet
from domain.model import evolve
from domain.policy import DEFAULT_POLICIES, GateResult, Policy
from domain.state import ModelState

__all__ = ["Governance", "Outcome"]


class Governance:
    """Command handling for models, versions, approvals, deployments, policies and jobs."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._clock = clock
        self._commands = Commands(store, projector, clock)

    async def handle(
        self,
        command: cmd.Command,
        meta: EventMeta,
        idem: Idempotency | None = None,
        *,
        expected_version: int | None = None,
        patience: float = DEFAULT_PATIENCE_SECONDS,
    ) -> Outcome:
        """Decide a command on its stream and append the events (see `Commands.handle`)."""
        return await self._commands.handle(
            command, meta, idem, expected_version=expected_version, patience=patience
        )

    def knows_model(self, name: str) -> bool:
        """Whether this process has seen model `name` (it exists), reading nothing; False
        tells nothing."""
        return self._commands.knows_model(name)

    def follow_before_answering(
        self, types: Iterable[str], follow: Callable[[], Awaitable[None]]
    ) -> Callable[[], None]:
        """Run `follow()` before a command that recorded events of `types` returns (until
        the returned callable is called)."""
        return self._commands.follow_before_answering(types, follow)

    async def raise_drift_alert(
        self, command: cmd.RaiseDriftAlert, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Record a drift alert, then whatever the policy does about it (caused by it)."""
        alert = await self.handle(command, meta, idem)
        if alert.replayed:
            return alert
        cause = str(alert.events[0].event_id)
        action_meta = msgspec.structs.replace(
            meta,
            causation_id=cause,
            idempotency_key=None,
            correlation_id=meta.correlation_id or cause,
        )
        recorded = alert.events[0].event
        assert isinstance(recorded, DriftDetected)
        await self.handle(cmd.RespondToDrift(name=command.name, alert=recorded), action_meta)
        return alert

    async def model(self, name: str) -> tuple[ModelState | None, int]:
        """A model's state folded afresh from its stream, and the stream's version."""
        state: ModelState | None = None
        recorded = await self._store.read_stream(decide.model_stream(name))
        for event in recorded:
            state = evolve(state, event.event, context_of(event))
        return state, recorded[-1].version if recorded else 0

    async def policy(self, tier: str) -> tuple[Policy, int]:
        """The policy in force for a risk tier and its version (0: the default)."""
        recorded = await self._store.read_stream(decide.policy_stream(tier))
        for event in reversed(recorded):
            if isinstance(event.event, PolicySet):
                return event.event.policy, event.version
        return DEFAULT_POLICIES[tier], 0

    async def plan(self, name: str, changes: list[cmd.DeploymentChange]) -> list[GateResult]:
        """The gates of a promotion, evaluated now, appending nothing (dry run)."""
        state, _ = await self.model(name)
        policy, _ = await self.policy(decide.require_model(name, state).risk_tier)
        plan = deploy.plan_promotions(state, name, changes, policy=policy, now=self._clock())
        return [gate for _, gates in plan for gate in gates]
