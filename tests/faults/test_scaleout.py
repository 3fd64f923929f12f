"""Scale-out on one machine: two APIs, two workers and two scorers on one PostgreSQL and
Redis; one of each killed with SIGKILL under load. Nothing acknowledged is lost, every job
ends once, the surviving scorers follow a promotion and a rollback within a bound."""

from __future__ import annotations

import pytest

from tests.faults import scaleout
from tests.faults.stack import Stack

pytestmark = [pytest.mark.scaleout, pytest.mark.faults, pytest.mark.processes]

# generous on a busy two-core machine: the scorers follow the log by notification
CONVERGENCE_BOUND_SECONDS = 10.0


async def test_two_of_each_process_survive_kill9_under_load(stack: Stack) -> None:
    result = await scaleout.scale_out_under_kill9(stack, writes_per_phase=40)
    print(f"\n{result}")
    print(f"scorers followed the promotion in {result.promotion_seconds} s")
    print(f"the surviving scorer followed the rollback in {result.rollback_seconds} s")
    assert result.acknowledged_models >= 3 * 40
    assert result.lost_models == 0
    assert result.misplaced == 0, "an acknowledged position holds another event"
    assert result.gap_free
    assert result.jobs_acknowledged >= 2 * (scaleout.VERSIONS_PER_API + scaleout.JOBS_PER_API)
    assert result.never_finished == 0
    assert result.duplicated == 0
    assert result.interrupted >= 1, "the worker was killed after its job ended"
    assert max(result.promotion_seconds + result.rollback_seconds) < CONVERGENCE_BOUND_SECONDS
    assert result.stale_after_switch == 0
    assert result.scored > 0
    assert result.survivor_unreachable == 0
    assert result.verify_ok
    assert result.api_verify_ok
    assert result.errors_logged == 0
    assert 500 not in result.write_statuses, result.write_statuses
    assert 500 not in result.score_statuses, result.score_statuses
