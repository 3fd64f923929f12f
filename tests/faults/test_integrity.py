"""Tampering with a real server's signed log, and with its export bundles: every change
the trust model says is detectable is detected, at the right position, by real
`model-ledger verify` processes (and the independent verifier for bundles).

Both read one log a stopped server wrote and signed (writing it takes most of the time);
neither changes it: tampering happens on copies, bundles are exported from it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults import bundles, integrity
from tests.faults.stack import Stack, private_stack

pytestmark = [pytest.mark.faults, pytest.mark.processes]


@pytest.fixture(scope="module")
async def signed() -> AsyncIterator[tuple[Stack, str]]:
    """A stack whose stopped server wrote the story and signed it; the head pinned."""
    async with private_stack() as stack:
        yield stack, await integrity.written_and_signed(stack)


async def test_a_superusers_tampering_is_found_where_the_trust_model_says(
    signed: tuple[Stack, str],
) -> None:
    outcome = await integrity.tampering_by_a_superuser(*signed)
    assert outcome.events >= 60 and outcome.checkpoints >= 4
    missed = [v for v in outcome.verifications if v.detectable and not v.located]
    assert missed == []
    assert outcome.detected == outcome.located == outcome.tried >= 11
    # the untouched copy passes; so does the tail cut with its checkpoint, verified with
    # the database alone, whose report says what it could not check
    wrongly = [v for v in outcome.verifications if not v.detectable and not v.honest]
    assert wrongly == []
    assert outcome.passed_honestly == outcome.must_pass == 3


async def test_damaged_export_bundles_fail_both_verifiers(signed: tuple[Stack, str]) -> None:
    outcome = await bundles.damaged_bundles(signed[0], written=True)
    wrong = [c for c in outcome.checks if c.ours != c.good or c.theirs != c.good]
    assert wrong == []
    assert outcome.tried == outcome.ours_detected == outcome.theirs_detected >= 20
    assert outcome.good == outcome.ours_accepted == outcome.theirs_accepted == 2
