"""The application `model-ledger serve` runs, beyond what `create_app` builds."""

from __future__ import annotations

import gc

from app.serve import serving_app
from app.settings import Settings
from tests.conftest import running


async def test_the_started_heap_is_moved_out_of_the_collectors_generations(
    settings: Settings,
) -> None:
    # what the start made lives as long as the process: full collections skip it
    before = gc.get_freeze_count()
    try:
        async with running(serving_app(settings)):
            assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # this test process goes on collecting everything
