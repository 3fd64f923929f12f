"""Fault scenarios run against real processes, each returning what it measured.

The fault tests assert on these results; `bench/faults.py` runs the same scenarios and
prints them as one table.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.faults.load import Writes, log_facts
from tests.faults.stack import Stack


@dataclass(frozen=True)
class LoadOutcome:
    """What a load under faults left: acknowledged writes, those missing, the log's shape."""

    acknowledged: int
    lost: int
    gap_free: bool
    chain_ok: bool
    statuses: Counter[int] = field(default_factory=Counter)


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


async def kill9_api_under_load(
    stack: Stack, kills: int = 2, writes_between: int = 150
) -> LoadOutcome:
    """8 clients register models; the API is killed with SIGKILL `kills` times mid-load."""
    writes = Writes("w")
    for kill in range(1, kills + 1):
        await _write_then_kill(stack, writes, kill * writes_between)
    api = stack.start("serve", "--no-worker", "--port", "0")
    url = api.listening()
    facts = await log_facts(stack.database_url)
    async with httpx.AsyncClient(base_url=url, headers=stack.admin_headers()) as client:
        report = (await client.get("/v1/audit/verify")).json()
    return LoadOutcome(
        acknowledged=len(writes.acknowledged),
        lost=len(set(writes.acknowledged) - facts.registered),
        gap_free=facts.count == facts.head,
        chain_ok=bool(report["ok"]),
        statuses=writes.statuses,
    )
