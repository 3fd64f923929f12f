"""scorer.loaded: at most once per (model, environment, version, arm) per instance per interval,
and the last event of each (model, environment, arm) always names what serves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.resources import Resources
from app.scoring.announce import Announcer
from app.scoring.features import FeatureSchema
from app.scoring.library import CompiledLibrary
from app.scoring.routing import Route, Served
from domain import events as ev
from tests.scoring.helpers import built


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _served(version: int, library: CompiledLibrary) -> Served:
    return Served(
        version=version,
        library=library,
        library_sha256=library.sha256,
        schema=FeatureSchema([], {}),
        format="lightgbm",
        artifact_sha256="a" * 64,
    )


def _table(champion: Served, challenger: Served | None = None) -> dict[tuple[str, str], Route]:
    strategy = "full" if challenger is None else "shadow"
    route = Route("fraud", "staging", strategy, champion, challenger)
    return {("fraud", "staging"): route}


async def _loaded(resources: Resources) -> list[tuple[int, str]]:
    return [
        (r.event.version, r.event.arm)
        for r in await resources.store.read_stream("scorer-unit")
        if isinstance(r.event, ev.ScorerLoaded)
    ]


def _libraries(tmp_path: Path) -> list[CompiledLibrary]:
    libraries = []
    for kind in ("seed0", "seed1"):
        path = tmp_path / f"{kind}.so"
        path.write_bytes(built(kind).library)
        libraries.append(CompiledLibrary.open(path, built(kind).library_sha256))
    return libraries


async def test_concurrent_refreshes_announce_a_library_once(
    resources: Resources, tmp_path: Path
) -> None:
    # the scorer's follower and an explicit refresh may announce at the same moment
    announcer = Announcer(resources.store, "unit", 60.0, Clock())
    announcer.serving(_table(_served(1, _libraries(tmp_path)[0])))
    await asyncio.gather(*(announcer.announce() for _ in range(3)))
    assert await _loaded(resources) == [(1, "champion")]


async def test_switches_within_the_interval_are_announced_once_it_has_passed(
    resources: Resources, tmp_path: Path
) -> None:
    libraries = _libraries(tmp_path)
    one, two = _served(1, libraries[0]), _served(2, libraries[1])
    clock = Clock()
    announcer = Announcer(resources.store, "unit", 60.0, clock)

    announcer.serving(_table(one))
    await announcer.announce()
    assert await _loaded(resources) == [(1, "champion")]
    await announcer.announce()  # nothing new
    clock.now += 10
    announcer.serving(_table(two, one))  # a new champion, the old one in shadow
    await announcer.announce()
    assert await _loaded(resources) == [(1, "champion"), (2, "champion"), (1, "shadow")]

    clock.now += 10
    announcer.serving(_table(one))  # rolled back within the interval: not yet announced
    await announcer.announce()
    assert len(await _loaded(resources)) == 3
    announcer.serving(_table(two))  # and forth again, then back: still nothing
    announcer.serving(_table(one))
    clock.now += 30
    await announcer.announce()
    assert len(await _loaded(resources)) == 3
    clock.now += 25  # 65 s since version 1 was announced as champion
    await announcer.announce()
    assert (await _loaded(resources))[3:] == [(1, "champion")]
    clock.now += 1_000
    await announcer.announce()
    assert len(await _loaded(resources)) == 4
