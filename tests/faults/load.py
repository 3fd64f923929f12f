"""Bounded concurrent clients that record what the server acknowledged, and the checks that
nothing acknowledged was lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx


@dataclass
class Writes:
    """Model registrations sent by `writers` concurrent clients, and how each ended."""

    prefix: str
    acknowledged: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0

    async def run(
        self, url: str, headers: dict[str, str], stop: asyncio.Event, writers: int = 8
    ) -> None:
        """Write until `stop` is set or the server is gone."""
        await asyncio.gather(*(self._writer(url, headers, stop, n) for n in range(writers)))

    async def _writer(self, url: str, headers: dict[str, str], stop: asyncio.Event, n: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            for sent in range(1_000_000):
                if stop.is_set():
                    return
                name = f"{self.prefix}-{n}-{sent}"
                try:
                    response = await client.post(
                        "/v1/models", json={"name": name, "risk_tier": "low"}
                    )
                except httpx.TransportError:
                    self.transport_errors += 1
                    return  # the server is gone: what was in flight may or may not be recorded
                self.statuses[response.status_code] += 1
                if response.status_code == 201:
                    self.acknowledged.append(name)

    async def until_acknowledged(self, count: int, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} writes in time"
            await asyncio.sleep(0.01)


@dataclass(frozen=True)
class LogFacts:
    """What the log holds, read straight from the database."""

    count: int
    head: int
    registered: frozenset[str]


async def log_facts(database_url: str) -> LogFacts:
    conn = await asyncpg.connect(database_url)
    try:
        count, head = await conn.fetchrow("SELECT count(*), coalesce(max(position), 0) FROM events")
        names = await conn.fetch(
            "SELECT data->>'name' AS name FROM events WHERE type = 'model.registered'"
        )
    finally:
        await conn.close()
    return LogFacts(count=count, head=head, registered=frozenset(r["name"] for r in names))


@dataclass
class PatientWrites(Writes):
    """Writers that ride out an outage: a 503 or a transport error is "not acknowledged, try
    again shortly", never the end. A request whose answer was lost may still have been
    committed: only a 201 counts as acknowledged."""

    # seconds between a refused or failed request and the writer's next one
    backoff: float = 0.05
    # when each acknowledgement arrived (time.monotonic), in the order they did
    acknowledged_at: list[float] = field(default_factory=list)

    async def _writer(self, url: str, headers: dict[str, str], stop: asyncio.Event, n: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            for sent in range(1_000_000):
                if stop.is_set():
                    return
                name = f"{self.prefix}-{n}-{sent}"  # never retried: a lost answer may be a write
                try:
                    response = await client.post(
                        "/v1/models", json={"name": name, "risk_tier": "low"}
                    )
                except httpx.TransportError:
                    self.transport_errors += 1
                    await asyncio.sleep(self.backoff)
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 201:
                    self.acknowledged.append(name)
                    self.acknowledged_at.append(time.monotonic())
                else:
                    await asyncio.sleep(self.backoff)

    def first_acknowledged_after(self, moment: float) -> float | None:
        """When the first write acknowledged after `moment` was (time.monotonic), if any."""
        return next((at for at in self.acknowledged_at if at > moment), None)
