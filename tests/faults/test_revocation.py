"""A token revoked on the API is refused by a separate scorer process within a second,
while that scorer scores a real compiled model."""

from __future__ import annotations

import pytest

from tests.faults import revocation
from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def test_a_revoked_token_is_refused_by_the_scorer_within_a_second(stack: Stack) -> None:
    outcome = await revocation.revocation_window(stack, trials=5)
    assert outcome.trials == 5
    assert outcome.scored >= 5  # each token scored before it was revoked
    assert outcome.revoked_max < 1.0, outcome.revoked
    assert outcome.issued_max < 1.0, outcome.issued
