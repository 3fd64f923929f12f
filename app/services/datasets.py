"""Named datasets: uploads recorded as versions of a name, and the latest version of each."""

from __future__ import annotations

from app.services.folds import fold_dataset
from app.services.governance import Governance
from app.store.events import EventStore
from domain import commands as cmd
from domain.datasets import DatasetState, DatasetVersion, dataset_stream, require_name
from domain.errors import NotFound
from domain.events import EventMeta


class Datasets:
    """Versions of named datasets, through the one command path."""

    def __init__(self, store: EventStore, governance: Governance) -> None:
        self._store = store
        self._governance = governance

    async def add(self, command: cmd.AddDatasetVersion, meta: EventMeta) -> DatasetVersion:
        """Record an upload under its name: the version it became (the latest one, when
        the file is the latest version already)."""
        await self._governance.handle(command, meta)
        dataset = await self.get(command.name)
        latest = dataset.latest()
        assert latest is not None
        return latest

    async def get(self, name: str) -> DatasetState:
        """A named dataset and its versions, or NotFound."""
        require_name(name)
        state: DatasetState | None = None
        for event in await self._store.read_stream(dataset_stream(name)):
            state = fold_dataset(state, event)
        if state is None:
            raise NotFound(f"no dataset named {name!r}")
        return state

    async def all(self) -> list[DatasetState]:
        """Every named dataset, by name, folded from the log's dataset events."""
        states: dict[str, DatasetState] = {}
        after = 0
        while page := await self._store.read_all(after, types=["dataset.version_added"]):
            for event in page:
                state = fold_dataset(states.get(event.stream), event)
                if state is not None:
                    states[event.stream] = state
            after = page[-1].position
        return sorted(states.values(), key=lambda state: state.name)

    async def latest(self, names: list[str]) -> dict[str, cmd.DatasetRef]:
        """The latest version of each named dataset that has one."""
        found: dict[str, cmd.DatasetRef] = {}
        for name in dict.fromkeys(names):
            try:
                newest = (await self.get(name)).latest()
            except NotFound:
                continue
            if newest is not None:
                found[name] = cmd.DatasetRef(
                    name=name, dataset_version=newest.version, sha256=newest.sha256
                )
        return found
