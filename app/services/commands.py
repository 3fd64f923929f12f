"""The one command path: read the target stream, fold it, decide, append.

Every change, from an HTTP request or from a job's outcome, is a domain command handled
here. What the decision reads besides the stream (the policy of the model's tier, the time)
is resolved first, so deciders stay pure and synchronous. A command that changes nothing is
an explicit outcome (no events); one that lost a race to another append is decided again on
the fresh stream, unless the caller decided against the state it saw.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import msgspec

from app.services.folds import Folds, fold_dataset, fold_model, fold_policy
from app.store.codec import RecordedEvent
from app.store.events import AppendResult, EventStore, Idempotency
from app.store.projector import Projector
from domain import commands as cmd
from domain import handle
from domain.datasets import DatasetState, dataset_stream
from domain.decide import model_stream, policy_stream
from domain.errors import ConcurrencyConflict, DomainError
from domain.events import Event, EventMeta, event_type
from domain.policy import DEFAULT_POLICIES, Policy
from domain.state import ModelState

_log = logging.getLogger("model_ledger.commands")
# A conflict means another append to the stream landed: deciding again on the fresh state is
# the right answer, and one of each round of concurrent commands wins, so N commands sent at
# once on one model need up to N rounds. Retrying stops past the caller's patience.
DEFAULT_PATIENCE_SECONDS = 10.0
# concurrent appends share one group commit: a random pause lets the losers of a round reach
# different batches instead of colliding again together
_CONFLICT_PAUSE_SECONDS = 0.02
# decided against what the caller saw: a changed stream is the caller's to judge again
_DECIDED_ONCE = (cmd.RegisterModel, cmd.ChangeDeployments, cmd.Rollback)
# a new policy version does not depend on the earlier ones: appended whatever the stream holds
_APPENDED_ANYWAY = (cmd.SetPolicy,)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command appended (or, replayed, had appended the first time); no events when
    nothing changed."""

    events: list[RecordedEvent]
    stream_version: int
    replayed: bool = False
    # The model's state with these events folded in (the fold the governance view holds,
    # `domain.model.evolve`), None when replayed or not a model's stream; folded in place,
    # so it is read before the caller's next await (it may hold later events by then).
    model: ModelState | None = None
    # the policy of its tier and that policy's version, when the command read them
    policy: tuple[Policy, int] | None = None

    @property
    def position(self) -> int:
        """Where the command's first event landed (what a response reports)."""
        return self.events[0].position


class Commands:
    """Handles commands; keeps each stream's fold between them (`app.services.folds`)."""

    def __init__(
        self, store: EventStore, projector: Projector, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._projector = projector
        self._clock = clock
        self._models: Folds[ModelState] = Folds(fold_model)
        self._policies: Folds[Policy] = Folds(fold_policy)
        self._datasets: Folds[DatasetState] = Folds(fold_dataset)
        self._followers: list[tuple[frozenset[str], Callable[[], Awaitable[None]]]] = []

    def follow_before_answering(
        self, types: Iterable[str], follow: Callable[[], Awaitable[None]]
    ) -> Callable[[], None]:
        """Have `follow()` take in an outcome holding events of `types` before it returns;
        returns what undoes that.

        This process's scorer registers its refresh here: a command that moved a deployment
        returns only once this process routes by it (read-your-writes for routing).
        """
        entry = (frozenset(types), follow)
        self._followers.append(entry)
        return lambda: self._followers.remove(entry)

    def knows_model(self, name: str) -> bool:
        """Whether this process has folded model `name`'s stream (so the model exists: none
        is ever removed), reading nothing; False tells nothing."""
        return self._models.version(model_stream(name)) > 0

    async def handle(
        self,
        command: cmd.Command,
        meta: EventMeta,
        idem: Idempotency | None = None,
        *,
        expected_version: int | None = None,
        patience: float = DEFAULT_PATIENCE_SECONDS,
    ) -> Outcome:
        """Decide the command on its stream and append what it decided.

        With `expected_version` (the version the caller saw), any change since is a
        ConcurrencyConflict, as is a lost race for a command decided once.
        """
        if idem is not None and (earlier := await self._store.replayed(idem)) is not None:
            return await self._finish(earlier)
        once = expected_version is not None or isinstance(command, _DECIDED_ONCE)
        deadline = time.monotonic() + (0.0 if once else patience)
        # Decided without reading the stream's tail (one round trip less): a registration on
        # a stream this process knows nothing of, as on a new stream, and a command that reads
        # no policy on a model this process has folded, on that fold. The append expects that
        # version, so when another process appended meanwhile it conflicts and the command is
        # decided again on what it reads; a refusal or a no-op decided unread is made again
        # on what it reads before it is answered.
        stream = handle.stream_of(command)
        unread = expected_version is None and (
            (isinstance(command, cmd.RegisterModel) and self._models.version(stream) == 0)
            or (
                not handle.reads_policy(command)
                and not isinstance(command, _APPENDED_ANYWAY)
                and self._models.peek(stream) is not None
            )
        )
        while True:
            try:
                events, version, policy = await self._decide(
                    command, expected_version, read=not unread
                )
            except DomainError:
                if not unread:
                    raise
                unread = False
                continue
            if not events:
                if unread:
                    unread = False
                    continue
                return Outcome(events=[], stream_version=version)
            try:
                return await self._append(command, events, version, meta, idem, policy=policy)
            except ConcurrencyConflict:
                if unread:  # not a lost race: what this process did not know
                    unread = False
                    continue
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(random.uniform(0.0, _CONFLICT_PAUSE_SECONDS))  # noqa: S311

    async def _decide(
        self, command: cmd.Command, expected_version: int | None, *, read: bool = True
    ) -> tuple[list[Event], int, tuple[Policy, int] | None]:
        """The events, the version decided on, and the tier's policy if the decision read it
        (`read` False: on the fold as it is, for a command that reads no policy)."""
        stream = handle.stream_of(command)
        amended = command.tier if isinstance(command, cmd.AmendPolicy) else None
        if read:
            policy = await self._read(stream, handle.reads_policy(command), amended)
        else:
            assert not handle.reads_policy(command), "a policy is read, never assumed"
            policy = DEFAULT_POLICIES["low"], 0  # what `_read` gives a command reading none
        policy_read = policy if handle.reads_policy(command) and amended is None else None
        # nothing awaits from here to the decision: the folded state is current for it
        state, version = self._models.get(stream)
        if isinstance(command, (cmd.SetPolicy, cmd.AmendPolicy)):
            state, version = None, self._policies.version(stream)
        if expected_version is not None and expected_version != version:
            raise ConcurrencyConflict(
                f"{stream} changed since version {expected_version} (now {version})",
                stream=stream,
                expected_version=expected_version,
                actual_version=version,
            )
        dataset = None
        if isinstance(command, cmd.AddDatasetVersion):
            state, (dataset, version) = None, self._datasets.get(stream)
        facts = cmd.Facts(now=self._clock(), policy=policy[0], policy_version=policy[1])
        return handle.decide(command, state, facts, dataset), version, policy_read

    async def _read(
        self, stream: str, reads_policy: bool, tier: str | None = None
    ) -> tuple[Policy, int]:
        """Bring the stream's fold (and its tier's policy, or `tier`'s) up to date: one
        round trip when the stream is known; the policy in force and its version."""
        model = self._models.peek(stream) if tier is None else None
        if reads_policy and model is None and tier is None:
            await self._catch_up({stream: self._models.version(stream)})
            model = self._models.peek(stream)
        if tier is None:
            tier = model.risk_tier if reads_policy and model is not None else None
        tails = {stream: self._folds(stream).version(stream)}
        if tier is not None:
            tails[policy_stream(tier)] = self._policies.version(policy_stream(tier))
        await self._catch_up(tails)
        if tier is None:
            return DEFAULT_POLICIES["low"], 0
        policy, version = self._policies.get(policy_stream(tier))
        # an unknown tier has no policy: its decider says so
        return (
            (policy, version) if policy is not None else (DEFAULT_POLICIES.get(tier, Policy()), 0)
        )

    async def _catch_up(self, after: dict[str, int]) -> None:
        while after:
            tails = await self._store.read_tails(after)
            behind = {}
            for stream in after:
                folds = self._folds(stream)
                if not folds.advance(stream, tails.get(stream, [])):
                    behind[stream] = folds.version(stream)
            after = behind

    def _folds(self, stream: str) -> Folds[ModelState] | Folds[Policy] | Folds[DatasetState]:
        if stream.startswith(dataset_stream("")):
            return self._datasets
        return self._policies if stream.startswith(policy_stream("")) else self._models

    async def _append(
        self,
        command: cmd.Command,
        events: list[Event],
        version: int,
        meta: EventMeta,
        idem: Idempotency | None,
        *,
        policy: tuple[Policy, int] | None,
    ) -> Outcome:
        stream = handle.stream_of(command)
        ids = handle.event_ids(command, len(events)) or [uuid.uuid4() for _ in events]
        expected = None if isinstance(command, _APPENDED_ANYWAY) else version
        result = await self._store.append(
            stream, events, meta=meta, expected_version=expected, idempotency=idem, event_ids=ids
        )
        if result.replayed:
            return await self._finish(result)
        folds = self._folds(stream)
        current = folds.advance(stream, result.events)
        model = self._models.peek(stream) if current and folds is self._models else None
        outcome = await self._finish(result)
        return msgspec.structs.replace(outcome, model=model, policy=policy)

    async def _finish(self, result: AppendResult) -> Outcome:
        """Once the views a reader may look at next hold the events (read-your-writes)."""
        if result.replayed:  # the events are those of the first time
            await self._projector.catch_up_to(result.last_position)
            count = result.last_position - result.first_position + 1
            recorded = await self._store.read_all(result.first_position - 1, count)
        else:
            recorded = result.events
            await self._projector.catch_up_to(
                result.last_position, sorted({event_type(e.event) for e in recorded})
            )
        types = {event_type(e.event) for e in recorded}
        for wanted, follow in self._followers:
            if wanted & types:
                try:
                    await follow()
                except Exception:  # recorded all the same: the follower catches up later
                    _log.exception("following an append before answering failed")
        return Outcome(
            events=recorded, stream_version=result.stream_version, replayed=result.replayed
        )
