"""kill -9 of the API under concurrent load: nothing acknowledged is lost, the log has no gap,
the chain verifies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.conftest import Stack
from tests.faults.load import Writes, log_facts

pytestmark = [pytest.mark.faults, pytest.mark.processes]


async def _write_then_kill(stack: Stack, writes: Writes, acknowledged: int) -> None:
    api = stack.start("serve", "--no-worker", "--port", "0")
    url = api.listening()
    stop = asyncio.Event()
    load = asyncio.create_task(writes.run(url, stack.admin_headers(), stop))
    try:
        await writes.until_acknowledged(acknowledged)
        await asyncio.to_thread(api.kill9)  # mid-load: requests in flight die with it
        await load
    finally:
        stop.set()
        await asyncio.gather(load, return_exceptions=True)


async def test_kill9_of_the_api_under_load_loses_no_acknowledged_write(stack: Stack) -> None:
    writes = Writes("w")
    for total in (150, 300):
        await _write_then_kill(stack, writes, total)

    api = stack.start("serve", "--no-worker", "--port", "0")
    url = api.listening()
    facts = await log_facts(stack.database_url)
    lost = set(writes.acknowledged) - facts.registered
    assert lost == set(), f"{len(lost)} acknowledged writes lost"
    assert facts.count == facts.head, "positions have a gap"
    assert 500 not in writes.statuses, writes.statuses
    async with httpx.AsyncClient(base_url=url, headers=stack.admin_headers()) as client:
        report = (await client.get("/v1/audit/verify")).json()
    assert report["ok"], report
