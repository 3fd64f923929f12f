"""Hostile requests against a real `serve` over real TCP: every one is refused (never a
5xx), none appends anything, the server keeps answering others meanwhile (no stall) and
after, and its memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from tests.faults.hostile_requests import HUNG_UP, RESET, TARGET, Hostile, hostile_requests
from tests.faults.stack import Stack


@dataclass(frozen=True)
class HostileOutcome:
    """Requests sent and how they were answered; what the server did meanwhile and after."""

    sent: int
    statuses: Counter[str]
    # (request, answer) for answers outside those the request allows
    unexpected: tuple[tuple[str, str], ...]
    appended: int
    health_checks: int
    slowest_health_seconds: float
    memory_growth_mb: float
    answers_after: bool
    # tracebacks the server logged (an error no answer showed, e.g. after a client hung up)
    server_tracebacks: int
    slowest: tuple[str, float] = field(default=("", 0.0))


async def _write(writer: asyncio.StreamWriter, raw: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(raw)
        await writer.drain()


async def send(host: str, port: int, hostile: Hostile, seconds: float = 60.0) -> str:
    """The status code answered (as text), HUNG_UP when the client gave up on purpose, or
    RESET when the server closed the connection without an answer the client could read."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if hostile.send_only is not None:
            await _write(writer, hostile.raw[: hostile.send_only])
            return HUNG_UP
        # written while the answer is awaited: a server may answer before reading it all
        writing = asyncio.create_task(_write(writer, hostile.raw))
        try:
            line = await asyncio.wait_for(reader.readline(), seconds)
        except ConnectionError:
            return RESET
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        return line.split()[1].decode() if line.startswith(b"HTTP/1.1 ") else RESET
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _head(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()


def peak_memory_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


async def _health_latencies(url: str, stop: asyncio.Event) -> list[float]:
    """GET /health back to back (every 20 ms) until `stop`: how long each took."""
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while not stop.is_set():
            began = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            latencies.append(time.perf_counter() - began)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    return latencies


async def _answers_a_write(url: str, headers: dict[str, str]) -> bool:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        health = await client.get("/health")
        created = await client.post("/v1/models", json={"name": "after", "risk_tier": "low"})
    return health.status_code == 200 and created.status_code == 201


async def hostile_bodies(stack: Stack) -> HostileOutcome:
    """Send every hostile request, one at a time, to a real server."""
    api = stack.start("serve", "--no-worker", "--port", "0")
    url = api.listening()
    headers = stack.admin_headers()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        made = await client.post("/v1/models", json={"name": TARGET, "risk_tier": "low"})
        assert made.status_code == 201, made.text
    host, port = url.removeprefix("http://").rsplit(":", 1)
    requests = hostile_requests(headers["Authorization"])
    head, memory = await _head(stack.database_url), peak_memory_kb(api.pid)
    stop = asyncio.Event()
    health = asyncio.create_task(_health_latencies(url, stop))
    answers: list[tuple[str, str, float]] = []
    try:
        for hostile in requests:
            began = time.perf_counter()
            answer = await send(host, int(port), hostile)
            answers.append((hostile.name, answer, time.perf_counter() - began))
    finally:
        stop.set()
        latencies = await health
    appended = await _head(stack.database_url) - head
    growth = (peak_memory_kb(api.pid) - memory) / 1024
    allowed = {hostile.name: hostile.answers for hostile in requests}
    slowest = max(answers, key=lambda a: a[2])
    return HostileOutcome(
        sent=len(answers),
        statuses=Counter(answer for _, answer, _ in answers),
        unexpected=tuple((name, a) for name, a, _ in answers if a not in allowed[name]),
        appended=appended,
        health_checks=len(latencies),
        slowest_health_seconds=max(latencies),
        memory_growth_mb=growth,
        answers_after=await _answers_a_write(url, headers),
        server_tracebacks=api.text().count("Traceback"),
        slowest=(slowest[0], slowest[2]),
    )
