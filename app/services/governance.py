"""Governance command handlers: read the stream, fold, decide, append. Nothing else.

Shared by the HTTP layer and the workers. A handler never commits anything but its one
append; it waits for the views to include it (read-your-writes) before returning.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from app.store.codec import RecordedEvent, context_of
from app.store.events import AppendResult, EventStore, Idempotency
from app.store.projector import Projector
from domain import commands as cmd
from domain import decide, deploy
from domain.errors import ConcurrencyConflict
from domain.events import Event, EventMeta, PolicySet
from domain.model import evolve
from domain.policy import DEFAULT_POLICIES, GateResult, Policy
from domain.state import ModelState

# A conflict means another append to the stream landed: deciding again on the fresh state is
# the right answer, and one of each round of concurrent commands wins, so N commands sent at
# once on one model need up to N rounds. Retrying stops only past this long (or at once for
# commands that must not be re-decided: a rollback, an If-Match).
_CONFLICT_PATIENCE_SECONDS = 10.0
# concurrent appends share one group commit: a random pause lets the losers of a round reach
# different batches instead of colliding again together
_CONFLICT_PAUSE_SECONDS = 0.02


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command appended (or, on an idempotent retry, had appended the first time)."""

    result: AppendResult
    events: list[RecordedEvent]


class Governance:
    """Command handlers for models, versions, approvals, deployments and policies."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._projector = projector
        self._clock = clock

    async def model(self, name: str) -> tuple[ModelState | None, int]:
        """A model's state folded from its stream, and the stream's version."""
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

    async def register_model(
        self, command: cmd.RegisterModel, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Register a model name."""
        return await self._on_model(
            command.name, lambda s: decide.register_model(command, s), meta, idem, retry=False
        )

    async def update_model(
        self, name: str, command: cmd.UpdateModel, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome | None:
        """Change a model's description, owner, tags or sensitive features."""
        return await self._on_model(
            name, lambda s: decide.update_model(name, command, s), meta, idem
        )

    async def register_version(
        self, name: str, command: cmd.RegisterVersion, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Register a version and request its compile job."""
        job_id = str(uuid.uuid4())
        return await self._on_model(
            name,
            lambda s: decide.register_version(s, name, command, job_id=job_id),
            meta,
            idem,
        )

    async def decide_version(
        self,
        name: str,
        number: int,
        command: cmd.Decide,
        meta: EventMeta,
        idem: Idempotency | None,
    ) -> Outcome:
        """Approve or reject a version as the calling approver."""

        async def decide_now(state: ModelState | None) -> list[Event]:
            model = decide.require_model(name, state)
            policy, version = await self.policy(model.risk_tier)
            return decide.decide_approval(
                state,
                name,
                number,
                command,
                approver=meta.actor,
                policy=policy,
                policy_version=version,
                now=self._clock(),
            )

        return await self._on_model_async(name, decide_now, meta, idem)

    async def revoke_decision(
        self, name: str, number: int, reason: str, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Withdraw the caller's standing decision on a version."""
        return await self._on_model(
            name,
            lambda s: decide.revoke_approval(s, name, number, approver=meta.actor, reason=reason),
            meta,
            idem,
        )

    async def plan(self, name: str, changes: list[cmd.Promote]) -> list[GateResult]:
        """The gates of a promotion, evaluated now, appending nothing (dry run)."""
        state, _ = await self.model(name)
        policy, _ = await self.policy(decide.require_model(name, state).risk_tier)
        plan = deploy.plan_promotions(state, name, changes, policy=policy, now=self._clock())
        return [gate for _, gates in plan for gate in gates]

    async def promote(
        self,
        name: str,
        changes: list[cmd.Promote],
        meta: EventMeta,
        idem: Idempotency | None,
        *,
        expected_version: int | None = None,
    ) -> Outcome:
        """Move serving pointers atomically; a concurrent change to the model is a 409.

        With `expected_version` (the model's ETag the caller saw), any change since is a 409.
        """

        async def decide_now(state: ModelState | None) -> list[Event]:
            policy, version = await self.policy(decide.require_model(name, state).risk_tier)
            return deploy.promote(
                state, name, changes, policy=policy, policy_version=version, now=self._clock()
            )

        # no retry: the caller decided against a state that has since changed
        return await self._on_model_async(
            name, decide_now, meta, idem, retry=False, expected_version=expected_version
        )

    async def rollback(
        self, name: str, command: cmd.Rollback, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Return an environment to its last good champion."""
        return await self._on_model(
            name, lambda s: deploy.rollback(s, name, command), meta, idem, retry=False
        )

    async def retire(
        self, name: str, number: int, reason: str, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Retire a version."""
        return await self._on_model(
            name, lambda s: decide.retire(s, name, number, reason), meta, idem
        )

    async def raise_drift_alert(
        self, name: str, command: cmd.RaiseDriftAlert, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Record a drift alert, then whatever the policy does about it (caused by it)."""
        alert = await self._on_model(
            name, lambda s: decide.raise_drift_alert(s, name, command), meta, idem
        )
        if alert.result.replayed:
            return alert
        cause = str(alert.events[0].event_id)
        action_meta = msgspec.structs.replace(
            meta,
            causation_id=cause,
            idempotency_key=None,
            correlation_id=meta.correlation_id or cause,
        )

        async def act(state: ModelState | None) -> list[Event]:
            model = decide.require_model(name, state)
            policy, _ = await self.policy(model.risk_tier)
            return deploy.drift_action(model, alert.events[0].event, policy)  # type: ignore[arg-type]

        await self._on_model_async(name, act, action_meta, None)
        return alert

    async def set_policy(
        self, tier: str, policy: Policy, meta: EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Record a new policy version for a tier (itself audited like any event)."""
        if idem is not None and (earlier := await self._store.replayed(idem)) is not None:
            return await self._finish(earlier)
        events = decide.set_policy(tier, policy)
        result = await self._store.append(
            decide.policy_stream(tier), events, meta=meta, expected_version=None, idempotency=idem
        )
        return await self._finish(result)

    async def decide_on_model(
        self,
        name: str,
        decider: Callable[[ModelState | None], list[Event]],
        meta: EventMeta,
        idem: Idempotency | None,
    ) -> Outcome:
        """Any pure decider on a model's stream: read, fold, decide, append."""
        return await self._on_model(name, decider, meta, idem)

    async def record(
        self,
        name: str,
        decider: Callable[[ModelState | None], list[Event]],
        meta: EventMeta,
        *,
        event_ids: Callable[[int], list[uuid.UUID]],
    ) -> Outcome:
        """Append what a job decided, under ids fixed by the job: a second attempt replays."""

        async def wrapped(state: ModelState | None) -> list[Event]:
            return decider(state)

        return await self._on_model_async(name, wrapped, meta, None, event_ids=event_ids)

    async def _on_model(
        self,
        name: str,
        decider: Callable[[ModelState | None], list[Event]],
        meta: EventMeta,
        idem: Idempotency | None,
        *,
        retry: bool = True,
    ) -> Outcome:
        async def wrapped(state: ModelState | None) -> list[Event]:
            return decider(state)

        return await self._on_model_async(name, wrapped, meta, idem, retry=retry)

    async def _on_model_async(
        self,
        name: str,
        decider: Callable[[ModelState | None], object],
        meta: EventMeta,
        idem: Idempotency | None,
        *,
        retry: bool = True,
        expected_version: int | None = None,
        event_ids: Callable[[int], list[uuid.UUID]] | None = None,
    ) -> Outcome:
        if idem is not None and (earlier := await self._store.replayed(idem)) is not None:
            return await self._finish(earlier)
        patience = time.monotonic() + (_CONFLICT_PATIENCE_SECONDS if retry else 0.0)
        while True:
            state, version = await self.model(name)
            if expected_version is not None and expected_version != version:
                raise ConcurrencyConflict(
                    f"model {name!r} changed since version {expected_version} (now {version})",
                    expected_version=expected_version,
                    actual_version=version,
                )
            events: list[Event] = await decider(state)  # type: ignore[misc]
            if not events:
                head, _ = await self._store.head()
                return Outcome(
                    result=AppendResult(
                        stream=decide.model_stream(name),
                        first_position=head + 1,
                        last_position=head,
                        stream_version=version,
                        recorded_at=self._clock(),
                    ),
                    events=[],
                )
            try:
                result = await self._store.append(
                    decide.model_stream(name),
                    events,
                    meta=meta,
                    expected_version=version,
                    idempotency=idem,
                    event_ids=None if event_ids is None else event_ids(len(events)),
                )
            except ConcurrencyConflict:
                if time.monotonic() >= patience:
                    raise
                await asyncio.sleep(random.uniform(0.0, _CONFLICT_PAUSE_SECONDS))  # noqa: S311
                continue
            return await self._finish(result)

    async def _finish(self, result: AppendResult) -> Outcome:
        await self._projector.catch_up_to(result.last_position)
        count = result.last_position - result.first_position + 1
        events = await self._store.read_all(result.first_position - 1, count)
        return Outcome(result=result, events=events)
