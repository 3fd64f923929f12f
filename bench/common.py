"""Shared helpers for the benches: a server, a fresh migrated database, statistics, notes.

`MODEL_LEDGER_BENCH_DATABASE_URL` names the PostgreSQL server to use (any database on it:
benches create and drop their own). Unset, the local default is tried, and when nothing
answers there an embedded server is started in a temporary folder for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.store.migrate import migrate

ENV_URL = "MODEL_LEDGER_BENCH_DATABASE_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

T = TypeVar("T")


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (query string kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


async def interleaved_latencies(
    ops: Mapping[str, Callable[[], Awaitable[object]]],
    iterations: int,
    block: int,
    warmup: int = 200,
) -> dict[str, list[float]]:
    """Microseconds per call of each op, run in rotating blocks so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for name in names:
        for _ in range(warmup):
            await ops[name]()
    for index in range(iterations // block):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            op, into = ops[name], samples[name]
            for _ in range(block):
                start = time.perf_counter_ns()
                await op()
                into.append((time.perf_counter_ns() - start) / 1_000)
    return samples


async def budgeted_latencies(
    ops: Mapping[str, Callable[[], Awaitable[object]]],
    iterations: int,
    block: int,
    *,
    warmup: int = 10,
    budget_seconds: float = math.inf,
    min_iterations: int = 0,
) -> dict[str, list[float]]:
    """Like `interleaved_latencies`, for slow ops: stops early once `budget_seconds` are spent.

    Every op gets the same number of samples (whole rounds of blocks), at least
    `min_iterations` of them even past the budget.
    """
    samples: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for name in names:
        for _ in range(warmup):
            await ops[name]()
    gc.collect()
    start = time.perf_counter()
    for index in range(math.ceil(iterations / block)):
        if index * block >= min_iterations and time.perf_counter() - start > budget_seconds:
            break
        for name in names[index % len(names) :] + names[: index % len(names)]:
            op, into = ops[name], samples[name]
            for _ in range(block):
                begin = time.perf_counter_ns()
                await op()
                into.append((time.perf_counter_ns() - begin) / 1_000)
    return samples


async def tasks_rate(tasks: int, seconds: float, work: Callable[..., Awaitable[int]]) -> float:
    """Items/s of `tasks` concurrent `work(index, tag, deadline)` calls (each returns a count)."""
    gc.collect()  # a collection owed by earlier work must not land in this measurement
    tag, start = uuid.uuid4().hex[:8], time.perf_counter()
    counts = await asyncio.gather(*(work(i, tag, start + seconds) for i in range(tasks)))
    return sum(counts) / (time.perf_counter() - start)


def response_length(buffer: bytes | bytearray) -> int | None:
    """A raw HTTP/1.1 response's whole length once its headers are in, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return end + 4 + int(value)
    raise RuntimeError("response without Content-Length")


def rss_mib() -> dict[str, float]:
    """This process's resident set now and its peak so far (VmRSS, VmHWM), in MiB."""
    figures: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures["rss" if key == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024)
    if "peak" not in figures:  # not Linux: ru_maxrss only (KiB on Linux, bytes on macOS)
        import resource  # noqa: PLC0415

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        figures["peak"] = round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024))
    return figures


class GcClock:
    """Seconds spent in the cyclic garbage collector while active, and collections by generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    @contextlib.contextmanager
    def active(self) -> Iterator[GcClock]:
        gc.callbacks.append(self._callback)
        try:
            yield self
        finally:
            gc.callbacks.remove(self._callback)


@contextlib.asynccontextmanager
async def app_lifespan(app: Any, shutdown_seconds: float = 30.0) -> AsyncIterator[Any]:
    """Run an ASGI app's lifespan (Litestar `app.lifespan()`) in a task of its own.

    anyio scopes must exit in the task that entered them, so the lifespan lives in one task
    that waits for a stop signal; the caller drives requests in between.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), shutdown_seconds)


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@contextlib.asynccontextmanager
async def bench_server() -> AsyncIterator[tuple[str, str]]:
    """(server URL, where it came from): the env URL, the local default, or embedded."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured, ENV_URL
        return
    if await _answers(DEFAULT_URL):
        yield DEFAULT_URL, "local default"
        return
    from app.embedded import EmbeddedStack  # noqa: PLC0415 - only when needed

    with tempfile.TemporaryDirectory(prefix="ml-bench-") as home:
        stack = EmbeddedStack(Path(home))
        await asyncio.to_thread(stack.start)
        try:
            yield stack.database_url, "embedded (temp dir)"
        finally:
            await asyncio.to_thread(stack.stop)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "ml_bench") -> AsyncIterator[str]:
    """A new, migrated database with a random name; dropped (forcibly) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_database(server_url, name)
            await asyncio.to_thread(migrate, url)
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def machine_notes(pool: asyncpg.Pool, source: str) -> dict[str, Any]:
    """Cores, load, interpreter, event loop and the server settings that move the numbers."""
    settings = {
        name: await pool.fetchval(f"SHOW {name}")
        for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
    }
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "event_loop": type(asyncio.get_running_loop()).__module__,
        "server": source,
        **settings,
    }


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when installed (what the server uses), else asyncio."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
