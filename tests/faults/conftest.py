"""The fault suite's fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults.stack import Stack, private_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with private_stack() as created:
        yield created
