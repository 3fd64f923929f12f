"""Named datasets: each upload under a name is that name's next version (content-addressed
by sha256), so a retraining policy can say "the latest version of `transactions`" and record
which one it used."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.errors import InvalidInput

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class DatasetVersion(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One version of a named dataset, as recorded."""

    version: int
    sha256: str
    rows: int
    columns: list[str]
    format: str
    size: int
    added_at: datetime
    added_by: str
    position: int


class DatasetState(msgspec.Struct, gc=False, kw_only=True):
    """A named dataset: its versions, oldest first."""

    name: str
    versions: list[DatasetVersion] = msgspec.field(default_factory=list)

    def latest(self) -> DatasetVersion | None:
        """The newest version, if any."""
        return self.versions[-1] if self.versions else None


def dataset_stream(name: str) -> str:
    """The stream holding a named dataset's versions."""
    return f"dataset-{name}"


def require_name(name: str) -> None:
    """A dataset name is what a model name may be."""
    if not _NAME.match(name):
        raise InvalidInput(
            "dataset name must be 1-100 of a-z, 0-9, '.', '_', '-', starting alphanumeric",
            field="name",
        )


def add_version(command: cmd.AddDatasetVersion, state: DatasetState | None) -> list[ev.Event]:
    """The next version of the name; nothing when the file is its latest version already."""
    require_name(command.name)
    latest = state.latest() if state is not None else None
    if latest is not None and latest.sha256 == command.sha256:
        return []
    return [
        ev.DatasetVersionAdded(
            name=command.name,
            dataset_version=(latest.version if latest is not None else 0) + 1,
            sha256=command.sha256,
            rows=command.rows,
            columns=list(command.columns),
            format=command.format,
            size=command.size,
        )
    ]


def evolve(
    state: DatasetState | None, event: ev.Event, position: int, recorded_at: datetime, actor: str
) -> DatasetState | None:
    """Apply one event of a dataset's stream."""
    if not isinstance(event, ev.DatasetVersionAdded):
        return state
    state = state or DatasetState(name=event.name)
    state.versions.append(
        DatasetVersion(
            version=event.dataset_version,
            sha256=event.sha256,
            rows=event.rows,
            columns=list(event.columns),
            format=event.format,
            size=event.size,
            added_at=recorded_at,
            added_by=actor,
            position=position,
        )
    )
    return state
