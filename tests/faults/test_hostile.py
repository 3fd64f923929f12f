"""Hostile bodies, headers and paths against a real server over real HTTP: refused, never
a 5xx, nothing appended, no stall for other clients, memory bounded, still serving."""

from __future__ import annotations

import pytest

from tests.faults import hostile
from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def test_hostile_requests_are_refused_and_the_server_carries_on(stack: Stack) -> None:
    outcome = await hostile.hostile_bodies(stack)
    assert outcome.sent >= 40
    assert not [s for s in outcome.statuses if s.startswith("5")], outcome.statuses
    assert outcome.unexpected == ()
    assert outcome.appended == 0
    assert outcome.answers_after
    assert outcome.server_tracebacks == 0
    # a request the server must refuse never holds up the others (the health checks ran
    # throughout) nor costs it memory out of proportion (a 1 MB upload unpacking to 1 GB)
    assert outcome.slowest_health_seconds < 2.0, outcome.slowest_health_seconds
    assert outcome.memory_growth_mb < 256, outcome.memory_growth_mb
