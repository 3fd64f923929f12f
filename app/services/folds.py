"""Folded streams kept between commands: each stream's state and version, per process.

A command's cost must not grow with its stream's history, so the fold of a stream is kept
after a command and the next one reads only the events past its version (one indexed range
read, usually empty). Nothing here can make a decision wrong: the append that follows
expects the version the state was folded to, so a copy another process made stale turns
into an ordinary conflict and a retry on the fresh tail.

The states are folded in place (`domain.model.evolve` mutates; copying a state holding
thousands of versions on every event would cost what this saves). So a state handed out is
valid only until the caller's next await: the command path reads, then folds and decides
without awaiting in between.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from app.store.codec import RecordedEvent, context_of
from domain import datasets
from domain.datasets import DatasetState
from domain.events import PolicySet
from domain.model import evolve
from domain.policy import Policy
from domain.state import ModelState

S = TypeVar("S")
Fold = Callable[[S | None, RecordedEvent], S | None]


class _Entry(Generic[S]):
    __slots__ = ("state", "version")

    def __init__(self) -> None:
        self.state: S | None = None
        self.version = 0


class Folds(Generic[S]):
    """Streams' states folded by `fold`, the most recently used `capacity` of them kept."""

    def __init__(self, fold: Fold[S], capacity: int = 4_096) -> None:
        self._fold = fold
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry[S]] = OrderedDict()

    def version(self, stream: str) -> int:
        """The version this process has folded the stream to (0: nothing yet)."""
        entry = self._entries.get(stream)
        return 0 if entry is None else entry.version

    def peek(self, stream: str) -> S | None:
        """The state as folded so far, without reading anything."""
        entry = self._entries.get(stream)
        return None if entry is None else entry.state

    def get(self, stream: str) -> tuple[S | None, int]:
        """The state and version; valid until the caller awaits."""
        entry = self._entries.get(stream)
        return (None, 0) if entry is None else (entry.state, entry.version)

    def advance(self, stream: str, events: list[RecordedEvent]) -> bool:
        """Fold the stream's events that follow what is folded (others are already in).

        False when the events start past what is folded (the state was dropped meanwhile):
        read the stream again from `version(stream)`.
        """
        entry = self._entries.get(stream)
        if entry is None:
            entry = self._entries[stream] = _Entry()
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        self._entries.move_to_end(stream)
        for event in events:
            if event.version <= entry.version:
                continue  # folded already, from another command's read
            if event.version > entry.version + 1:
                return False
            try:
                entry.state = self._fold(entry.state, event)
            except BaseException:
                del self._entries[stream]  # half-applied: fold it afresh next time
                raise
            entry.version = event.version
        return True

    def forget(self, stream: str) -> None:
        """Drop a stream's state (it is folded from the start on next use)."""
        self._entries.pop(stream, None)


def fold_model(state: ModelState | None, event: RecordedEvent) -> ModelState | None:
    """A model's state: the deciders' fold."""
    return evolve(state, event.event, context_of(event))


def fold_policy(policy: Policy | None, event: RecordedEvent) -> Policy | None:
    """A tier's policy: the latest one set."""
    return event.event.policy if isinstance(event.event, PolicySet) else policy


def fold_dataset(state: DatasetState | None, event: RecordedEvent) -> DatasetState | None:
    """A named dataset's versions."""
    return datasets.evolve(state, event.event, event.position, event.recorded_at, event.meta.actor)
