"""Jobs under faults: a worker killed with SIGKILL mid-job; every job still ends exactly once."""

from __future__ import annotations

import pytest

from tests.faults import jobs
from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def test_every_job_ends_exactly_once_when_a_worker_is_killed_mid_job(stack: Stack) -> None:
    outcome = await jobs.jobs_under_worker_kill9(stack, jobs=8)
    print(f"\n{outcome}")
    assert outcome.accepted == outcome.requested == 9, outcome.statuses
    assert outcome.interrupted >= 1, "the worker was killed after its jobs ended"
    assert outcome.rerun >= outcome.interrupted
    assert outcome.never_finished == 0
    assert outcome.duplicated == 0
    assert outcome.terminal == outcome.requested
    assert outcome.views_agree
    assert outcome.errors_logged == 0
    assert 500 not in outcome.statuses, outcome.statuses
