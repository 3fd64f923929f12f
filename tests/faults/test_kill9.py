"""kill -9 under concurrent load: nothing acknowledged is lost, the log has no gap, the chain
verifies."""

from __future__ import annotations

import pytest

from tests.faults import scenarios
from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def test_kill9_of_the_api_under_load_loses_no_acknowledged_write(stack: Stack) -> None:
    outcome = await scenarios.kill9_api_under_load(stack)
    assert outcome.acknowledged >= 300
    assert outcome.lost == 0
    assert outcome.gap_free
    assert outcome.chain_ok
    assert 500 not in outcome.statuses, outcome.statuses
