"""Event store append and catch-up bench: every figure is a ratio to a baseline of the same run.

E1  sequential single-event append latency vs a `SELECT 1` round trip on the same pool
E2  events/s of N concurrent writers through one EventStore (group commit) vs N writers
    doing autocommit single-row INSERTs into a bare table, same payload
E3  catch-up: `read_all` decoded into events vs a raw asyncpg keyset scan of the same rows

    uv run python -m bench.append [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from app.resources import create_pool
from app.store import codec
from app.store.events import EventStore
from bench.common import bench_server, fresh_database, machine_notes, median, percentile, run
from domain.events import EventMeta, TokenIssued

META = EventMeta(actor="bench", role="admin", request_id="0123456789abcdef")
WRITER_COUNTS = (1, 8, 32)
POOL_SIZE = 32  # >= the most writers; 2 cores gain nothing from more backends
READ_LIMIT = 5_000
RAW_SCAN = (
    "SELECT position, stream, version, event_id, type, data::text, meta::text, recorded_at "
    "FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)
PLAIN_INSERT = "INSERT INTO bench_plain (stream, data) VALUES ($1, $2)"
GOALS = {
    "e1": ("append/select1 p50", "<=", 4.0),
    "e2": ("chained/plain @32", ">=", 1.0),
    "e3": ("decoded/raw", ">=", 0.6),
}


@dataclass(frozen=True)
class Sizes:
    e1_iterations: int  # per side, after warm-up
    e1_block: int  # appends and SELECT 1s alternate in blocks of this many
    e2_seconds: float  # per measurement
    e2_rounds: int  # chained and plain alternate; the median round is reported
    e3_events: int
    e3_rounds: int


FULL = Sizes(4_000, 200, 3.0, 3, 100_000, 3)
QUICK = Sizes(400, 50, 0.5, 1, 10_000, 1)


def token(n: int, tag: str) -> TokenIssued:
    return TokenIssued(
        token_id=f"{tag}-{n}", subject=f"svc-{tag}-{n % 97}", role="ci", token_sha256=f"{n:064x}"
    )


def micros(ns: float) -> float:
    return round(ns / 1_000, 1)


async def e1_latency(store: EventStore, pool: asyncpg.Pool, sizes: Sizes) -> dict[str, float]:
    stream, version = f"e1-{uuid.uuid4().hex[:8]}", 0
    appends: list[float] = []
    selects: list[float] = []

    async def one_append() -> None:
        nonlocal version
        await store.append(stream, [token(version, "e1")], meta=META, expected_version=version)
        version += 1

    async def one_select() -> None:
        await pool.fetchval("SELECT 1")

    async def timed(op: Callable[[], Awaitable[None]], into: list[float], n: int) -> None:
        for _ in range(n):
            start = time.perf_counter_ns()
            await op()
            into.append(time.perf_counter_ns() - start)

    await timed(one_append, [], 200)  # warm-up: plans, caches, connections
    await timed(one_select, [], 200)
    for block in range(sizes.e1_iterations // sizes.e1_block):
        sides = [(one_append, appends), (one_select, selects)]
        for op, into in sides if block % 2 == 0 else reversed(sides):
            await timed(op, into, sizes.e1_block)
    append_p50, select_p50 = percentile(appends, 50), percentile(selects, 50)
    return {
        "iterations": len(appends),
        "append_p50_us": micros(append_p50),
        "append_p99_us": micros(percentile(appends, 99)),
        "select1_p50_us": micros(select_p50),
        "select1_p99_us": micros(percentile(selects, 99)),
        "ratio": round(append_p50 / select_p50, 2),
    }


async def writers_rate(writers: int, write: Callable[[int], Awaitable[int]]) -> float:
    """Events/s of `writers` tasks each running `write(w)` (which returns its event count)."""
    start = time.perf_counter()
    counts = await asyncio.gather(*(write(w) for w in range(writers)))
    return sum(counts) / (time.perf_counter() - start)


async def chained_rate(store: EventStore, writers: int, seconds: float) -> float:
    tag = uuid.uuid4().hex[:8]
    deadline = time.perf_counter() + seconds

    async def write(w: int) -> int:
        stream, version = f"e2-{tag}-{w}", 0
        while time.perf_counter() < deadline:
            event = token(version, tag)
            await store.append(stream, [event], meta=META, expected_version=version)
            version += 1
        return version

    return await writers_rate(writers, write)


async def plain_rate(pool: asyncpg.Pool, writers: int, seconds: float) -> float:
    tag = uuid.uuid4().hex[:8]
    deadline = time.perf_counter() + seconds

    async def write(w: int) -> int:
        stream, n = f"e2-{tag}-{w}", 0
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                await conn.execute(PLAIN_INSERT, stream, codec.encode_event(token(n, tag)))
                n += 1
        return n

    return await writers_rate(writers, write)


async def e2_throughput(
    store: EventStore, pool: asyncpg.Pool, sizes: Sizes
) -> list[dict[str, Any]]:
    await pool.execute(
        "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, stream text, data json)"
    )
    await chained_rate(store, 8, sizes.e2_seconds / 3)  # warm-up both paths
    await plain_rate(pool, 8, sizes.e2_seconds / 3)
    results = []
    for writers in WRITER_COUNTS:
        chained: list[float] = []
        plain: list[float] = []
        for round_ in range(sizes.e2_rounds):
            if round_ % 2 == 0:
                chained.append(await chained_rate(store, writers, sizes.e2_seconds))
                plain.append(await plain_rate(pool, writers, sizes.e2_seconds))
            else:
                plain.append(await plain_rate(pool, writers, sizes.e2_seconds))
                chained.append(await chained_rate(store, writers, sizes.e2_seconds))
        ch, pl = median(chained), median(plain)
        results.append(
            {
                "writers": writers,
                "chained_eps": round(ch),
                "plain_eps": round(pl),
                "ratio": round(ch / pl, 2),
                "chained_rounds": [round(x) for x in chained],
                "plain_rounds": [round(x) for x in plain],
            }
        )
    return results


async def generate(store: EventStore, total: int, per_append: int = 50, tasks: int = 20) -> float:
    """Append `total` events in multi-event appends from concurrent tasks; events/s."""
    tag = uuid.uuid4().hex[:8]
    quota = [total // tasks + (1 if t < total % tasks else 0) for t in range(tasks)]

    async def produce(t: int) -> None:
        done, stream = 0, 0
        while done < quota[t]:
            n = min(per_append, quota[t] - done)
            events = [token(done + i, f"{tag}-{t}") for i in range(n)]
            await store.append(f"e3-{tag}-{t}-{stream}", events, meta=META, expected_version=0)
            done, stream = done + n, stream + 1

    start = time.perf_counter()
    await asyncio.gather(*(produce(t) for t in range(tasks)))
    return total / (time.perf_counter() - start)


async def scan(fetch: Callable[[int], Awaitable[list[Any]]], after: int, expect: int) -> float:
    start, seen = time.perf_counter(), 0
    while batch := await fetch(after):
        seen += len(batch)
        after = batch[-1][0] if isinstance(batch[-1], asyncpg.Record) else batch[-1].position
    assert seen == expect, f"read {seen} events, expected {expect}"
    return seen / (time.perf_counter() - start)


async def e3_catch_up(store: EventStore, pool: asyncpg.Pool, sizes: Sizes) -> dict[str, Any]:
    after = (await store.head())[0]
    generated = await generate(store, sizes.e3_events)
    await pool.execute("VACUUM ANALYZE events")  # as autovacuum would have by catch-up time

    async def decoded(position: int) -> list[Any]:
        return await store.read_all(position, limit=READ_LIMIT)

    async def raw(position: int) -> list[Any]:
        return await pool.fetch(RAW_SCAN, position, READ_LIMIT)

    n = sizes.e3_events
    await scan(raw, after, n)  # warm-up: buffers, plans
    decoded_eps: list[float] = []
    raw_eps: list[float] = []
    for round_ in range(sizes.e3_rounds):
        sides = [(decoded, decoded_eps), (raw, raw_eps)]
        for fetch, into in sides if round_ % 2 == 0 else reversed(sides):
            into.append(await scan(fetch, after, n))
    dec, rw = median(decoded_eps), median(raw_eps)
    return {"events": n, "generate_eps": round(generated), "decoded_eps": round(dec),
            "raw_eps": round(rw), "ratio": round(dec / rw, 2)}  # fmt: skip


def verdict(key: str, value: float) -> str:
    _, op, goal = GOALS[key]
    return "PASS" if (value <= goal if op == "<=" else value >= goal) else "MISS"


def report(figures: dict[str, Any]) -> str:
    e1, e2, e3, notes = figures["e1"], figures["e2"], figures["e3"], figures["notes"]
    lines = [
        f"E1  sequential single-event append, {e1['iterations']} each, interleaved blocks",
        f"    {'':22}{'p50 µs':>10}{'p99 µs':>10}",
        f"    {'EventStore.append':22}{e1['append_p50_us']:>10}{e1['append_p99_us']:>10}",
        f"    {'SELECT 1 (same pool)':22}{e1['select1_p50_us']:>10}{e1['select1_p99_us']:>10}",
        f"    append/select1 p50 = {e1['ratio']}x",
        "",
        "E2  concurrent writers, events/s (median of rounds)",
        f"    {'writers':>8}{'chained':>12}{'plain':>12}{'ratio':>8}",
    ]
    lines += [
        f"    {r['writers']:>8}{r['chained_eps']:>12}{r['plain_eps']:>12}{r['ratio']:>7}x"
        for r in e2
    ]
    lines += [
        "",
        f"E3  catch-up read of {e3['events']} events, limit {READ_LIMIT} per page "
        f"(generated at {e3['generate_eps']} ev/s)",
        f"    read_all decoded {e3['decoded_eps']:>10} ev/s",
        f"    raw keyset scan  {e3['raw_eps']:>10} ev/s",
        f"    decoded/raw = {e3['ratio']}x",
        "",
        "SUMMARY",
    ]
    values = {"e1": e1["ratio"], "e2": e2[-1]["ratio"], "e3": e3["ratio"]}
    for key, (label, op, goal) in GOALS.items():
        value = values[key]
        lines.append(
            f"    {key.upper()} {label:<20} {value:>6}x  goal {op} {goal}x  {verdict(key, value)}"
        )
    lines.append("    machine: " + ", ".join(f"{k}={v}" for k, v in notes.items()))
    return "\n".join(lines)


async def main(sizes: Sizes) -> dict[str, Any]:
    async with bench_server() as (server_url, source), fresh_database(server_url) as url:
        pool = await create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            store = EventStore(pool, notify=False)
            notes = await machine_notes(pool, source)
            figures: dict[str, Any] = {"sizes": asdict(sizes), "notes": notes}
            figures["e1"] = await e1_latency(store, pool, sizes)
            figures["e2"] = await e2_throughput(store, pool, sizes)
            figures["e3"] = await e3_catch_up(store, pool, sizes)
        finally:
            await pool.close()
    figures["verdicts"] = {
        "e1": verdict("e1", figures["e1"]["ratio"]),
        "e2": verdict("e2", figures["e2"][-1]["ratio"]),
        "e3": verdict("e3", figures["e3"]["ratio"]),
    }
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = run(main(QUICK if args.quick else FULL))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
