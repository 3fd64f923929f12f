"""A command that reads no policy, on a model this process has folded, is decided on that fold
without reading the stream's tail (app/services/commands.py). Another process's appends leave
that fold behind; the command must then answer exactly as if it had read: its append conflicts
and it is decided again, and a refusal or a no-op decided on the stale fold is checked against
what it reads before it is answered."""

from __future__ import annotations

import pytest

from app.resources import Resources, open_resources
from app.settings import Settings
from app.store.events import EventStore
from domain import commands as cmd
from domain.decide import model_stream
from domain.errors import Conflict
from domain.events import EventMeta, ModelUpdated, VersionRetired

_META = EventMeta(actor="ci", role="ci")


def version(n: int) -> cmd.RegisterVersion:
    return cmd.RegisterVersion(
        name="m",
        compile_job_id=f"job-{n}",
        artifact_sha256=f"{n:064x}",
        artifact_size=100,
        format="lightgbm",
        model_feature_names=["a", "b"],
    )


@pytest.fixture
def tail_reads(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times this process read streams' tails, counted on the real store."""
    calls: list[int] = []
    read_tails = EventStore.read_tails

    async def counted(store: EventStore, after: dict[str, int]) -> object:
        if store is resources.store:
            calls.append(len(after))
        return await read_tails(store, after)

    monkeypatch.setattr(EventStore, "read_tails", counted)
    return calls


async def test_a_warm_fold_is_decided_on_without_a_read(
    resources: Resources, tail_reads: list[int]
) -> None:
    governance = resources.governance
    await governance.handle(cmd.RegisterModel(name="m", risk_tier="low"), _META)
    tail_reads.clear()
    updated = await governance.handle(cmd.UpdateModel(name="m", description="one"), _META)
    await governance.handle(version(1), _META)
    assert tail_reads == []  # two commands, no tail read
    assert updated.stream_version == 2
    events = await resources.store.read_stream(model_stream("m"))
    assert [e.version for e in events] == [1, 2, 3, 4]  # registered, updated, v1 and its job


async def test_a_fold_left_behind_by_another_process_answers_as_a_read_would(
    settings: Settings, resources: Resources, tail_reads: list[int]
) -> None:
    mine = resources.governance
    await mine.handle(cmd.RegisterModel(name="m", risk_tier="low"), _META)
    await mine.handle(cmd.UpdateModel(name="m", description="x"), _META)
    await mine.handle(version(1), _META)
    async with open_resources(settings) as other:  # another API on the same log
        theirs = other.governance
        await theirs.handle(cmd.UpdateModel(name="m", description="y"), _META)
        tail_reads.clear()
        # a no-op on the stale fold ("x" already) is not one: the description is "y" now
        changed = await mine.handle(cmd.UpdateModel(name="m", description="x"), _META)
        assert [type(e.event) for e in changed.events] == [ModelUpdated]
        assert changed.stream_version == 6
        assert tail_reads == [1]  # read once the fold's answer was a no-op

        await theirs.handle(version(2), _META)
        # refused on the stale fold (no version 2 there), allowed on what is read
        retired = await mine.handle(cmd.RetireVersion(name="m", version=2, reason="here"), _META)
        assert [type(e.event) for e in retired.events] == [VersionRetired]
        assert tail_reads == [1, 1]  # read once the fold's answer was a refusal

        await theirs.handle(cmd.RetireVersion(name="m", version=1, reason="elsewhere"), _META)
        # allowed on the stale fold (version 1 not retired there): its append conflicts, and
        # on what is read it is refused, as anywhere
        with pytest.raises(Conflict, match="already retired"):
            await mine.handle(cmd.RetireVersion(name="m", version=1, reason="again"), _META)
        assert tail_reads == [1, 1, 1]  # read once the fold's append conflicted
    events = await resources.store.read_stream(model_stream("m"))
    assert [e.version for e in events] == list(range(1, 11))
    state, _ = await resources.registry.model_state("m")
    assert state.description == "x"
    assert {n: v.retired_at is not None for n, v in state.versions.items()} == {1: True, 2: True}


async def test_a_conflict_on_a_stale_fold_is_not_a_lost_race_for_a_command_decided_once(
    settings: Settings, resources: Resources
) -> None:
    mine = resources.governance
    await mine.handle(cmd.RegisterModel(name="m", risk_tier="low"), _META)
    await mine.handle(version(1), _META)
    async with open_resources(settings) as other:
        await other.governance.handle(cmd.UpdateModel(name="m", description="y"), _META)
    # decided on the stale fold, its append conflicts; decided again on what it reads
    retired = await mine.handle(cmd.RetireVersion(name="m", version=1, reason="r"), _META)
    assert retired.stream_version == 5
