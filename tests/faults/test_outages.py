"""Store outages under load, with real processes: Redis killed and started again empty,
PostgreSQL stopped or killed and started again. Writes and job requests keep their promises:
nothing acknowledged is lost, the log stays gap-free and verifies, every job ends once, an
outage is a 503 and never a 500, and the API recovers in the same process."""

from __future__ import annotations

from typing import Literal

import pytest

from tests.faults import outages
from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def test_redis_restarted_empty_mid_load_loses_no_write_and_runs_every_job_once(
    stack: Stack,
) -> None:
    outcome = await outages.redis_restarted_empty_under_load(stack)
    print(f"\n{outcome}")
    assert outcome.acknowledged_while_down >= 100  # the log is PostgreSQL
    assert outcome.jobs_requested_while_down >= 5
    assert outcome.jobs_accepted == outcome.jobs_requested, outcome.statuses
    assert set(outcome.statuses) == {201, 202, 200}, outcome.statuses
    assert outcome.lost == 0
    assert outcome.gap_free
    assert outcome.chain_ok
    assert outcome.jobs_never_finished == 0
    assert outcome.jobs_duplicated == 0
    assert outcome.jobs_terminal == outcome.jobs_accepted
    assert outcome.views_agree
    assert outcome.errors_logged == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_restarted_mid_load_is_a_503_then_the_same_api_writes_again(
    stack: Stack, how: Literal["stop", "kill"]
) -> None:
    outcome = await outages.database_restarted_under_load(stack, how)
    print(f"\n{outcome}")
    assert outcome.refused >= 40
    assert outcome.errors == 0, outcome.statuses
    assert set(outcome.statuses) <= {201, 503}, outcome.statuses
    assert (outcome.ready_during, outcome.ready_after) == (503, 200)
    assert outcome.lost == 0
    assert outcome.gap_free
    assert outcome.chain_ok
    assert outcome.same_api_process
    assert outcome.errors_logged == 0  # an outage is a warning, not a bug's traceback
    assert outcome.redis_blamed == 0
