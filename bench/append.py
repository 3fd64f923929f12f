"""Event store append and catch-up bench: every figure is a ratio to a baseline of the same run.

E1  sequential single-event append latency vs a `SELECT 1` round trip on the same pool
    (and a plain autocommit INSERT, for context: the commit's WAL flush is in both)
E2  events/s of N concurrent writers through one EventStore (group commit) vs N writers
    doing autocommit single-row INSERTs into a bare table, same payload
E3  catch-up: `read_all` decoded into events vs a raw asyncpg keyset scan of the same rows

The log is first seeded with history and ANALYZEd, as autovacuum keeps a live ledger;
`--cold` skips that and measures E1/E2 on the freshly migrated, never-analyzed table.

    uv run python -m bench.append [--quick] [--cold] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from bench import common
from domain.events import EventMeta, TokenIssued

META = EventMeta(actor="bench", role="admin", request_id="0123456789abcdef")
WRITER_COUNTS = (1, 8, 32)
POOL_SIZE = 32  # >= the most writers; 2 cores gain nothing from more backends
READ_LIMIT = 5_000
RAW_SCAN = (
    "SELECT position, stream, version, event_id, type, data::text, meta::text, recorded_at "
    "FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)
PLAIN_TABLE = "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, stream text, data json)"
PLAIN_INSERT = "INSERT INTO bench_plain (stream, data) VALUES ($1, $2)"
E1_ROWS = {
    "append": "EventStore.append",
    "insert": "plain INSERT (autocmt)",
    "select1": "SELECT 1 (same pool)",
}
GOALS = {"e1": ("append/select1 p50", "<=", 4.0), "e2": ("chained/plain @32w", ">=", 1.0)}
GOALS["e3"] = ("decoded/raw", ">=", 0.6)


@dataclass(frozen=True)
class Sizes:
    seed: int  # events of history before E1 (skipped with --cold)
    e1_iterations: int  # per side, after warm-up
    e1_block: int  # append, INSERT and SELECT 1 take turns in blocks of this many
    e2_seconds: float  # per measurement
    e2_rounds: int  # chained and plain alternate; the median round is reported
    e3_events: int
    e3_rounds: int


FULL = Sizes(20_000, 4_000, 200, 3.0, 3, 100_000, 5)
QUICK = Sizes(2_000, 400, 50, 0.5, 1, 10_000, 3)


def token(n: int, tag: str) -> TokenIssued:
    return TokenIssued(
        token_id=f"{tag}-{n}", subject=f"svc-{tag}-{n % 97}", role="ci", token_sha256=f"{n:064x}"
    )


async def generate(store: EventStore, total: int, per_append: int = 50, tasks: int = 20) -> float:
    """Append `total` events as multi-event appends from concurrent tasks; events/s.

    ANALYZE every 10,000 events, as autovacuum keeps a live ledger's statistics current.
    """
    tag, elapsed = uuid.uuid4().hex[:8], 0.0
    for chunk, first in enumerate(range(0, total, 10_000)):
        size = min(10_000, total - first)
        quota = [size // tasks + (t < size % tasks) for t in range(tasks)]

        async def produce(t: int, quota: list[int] = quota, chunk: int = chunk) -> None:
            for stream, done in enumerate(range(0, quota[t], per_append)):
                stop = min(done + per_append, quota[t])
                events = [token(i, f"{tag}-{chunk}-{t}") for i in range(done, stop)]
                name = f"g-{tag}-{chunk}-{t}-{stream}"
                await store.append(name, events, meta=META, expected_version=0)

        await store.pool.execute("ANALYZE events")
        start = time.perf_counter()
        await asyncio.gather(*(produce(t) for t in range(tasks)))
        elapsed += time.perf_counter() - start
    await store.pool.execute("ANALYZE events")
    return total / elapsed


async def e1_latency(store: EventStore, pool: asyncpg.Pool, sizes: Sizes) -> dict[str, float]:
    stream, version = f"e1-{uuid.uuid4().hex[:8]}", 0

    async def append() -> None:
        nonlocal version
        await store.append(stream, [token(version, "e1")], meta=META, expected_version=version)
        version += 1

    async def insert() -> None:
        await pool.execute(PLAIN_INSERT, stream, codec.encode_event(token(version, "e1")))

    async def select1() -> None:
        await pool.fetchval("SELECT 1")

    ops = {"append": append, "insert": insert, "select1": select1}
    samples = await common.interleaved_latencies(ops, sizes.e1_iterations, sizes.e1_block)
    figures: dict[str, float] = {"iterations": len(samples["append"])}
    for name, values in samples.items():
        figures |= {f"{name}_p{q}_us": round(common.percentile(values, q), 1) for q in (50, 99)}
    p50 = {name: common.percentile(values, 50) for name, values in samples.items()}
    figures["append_per_insert"] = round(p50["append"] / p50["insert"], 2)
    return figures | {"ratio": round(p50["append"] / p50["select1"], 2)}


async def e2_throughput(
    store: EventStore, pool: asyncpg.Pool, sizes: Sizes
) -> list[dict[str, Any]]:
    async def chained(w: int, tag: str, deadline: float) -> int:
        stream, n = f"e2-{tag}-{w}", 0
        while time.perf_counter() < deadline:
            await store.append(stream, [token(n, tag)], meta=META, expected_version=n)
            n += 1
        return n

    async def plain(w: int, tag: str, deadline: float) -> int:
        stream, n = f"e2-{tag}-{w}", 0
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                await conn.execute(PLAIN_INSERT, stream, codec.encode_event(token(n, tag)))
                n += 1
        return n

    for write in (chained, plain):  # warm-up both paths
        await common.tasks_rate(8, sizes.e2_seconds / 3, write)
    results = []
    for writers in WRITER_COUNTS:
        rates: dict[str, list[float]] = {"chained": [], "plain": []}
        for round_ in range(sizes.e2_rounds):
            for write in (chained, plain) if round_ % 2 == 0 else (plain, chained):
                rates[write.__name__].append(
                    await common.tasks_rate(writers, sizes.e2_seconds, write)
                )
        ch, pl = common.median(rates["chained"]), common.median(rates["plain"])
        rounds = {f"{k}_rounds": [round(x) for x in v] for k, v in rates.items()}
        row = {"writers": writers, "chained_eps": round(ch), "plain_eps": round(pl)}
        results.append(row | {"ratio": round(ch / pl, 2)} | rounds)
    return results


async def scan(fetch: Callable[[int], Awaitable[list[Any]]], after: int, expect: int) -> float:
    gc.collect()  # a collection owed by earlier work must not land in this measurement
    start, seen = time.perf_counter(), 0
    while batch := await fetch(after):
        seen += len(batch)
        after = batch[-1][0] if isinstance(batch[-1], asyncpg.Record) else batch[-1].position
    if seen != expect:
        raise RuntimeError(f"read {seen} events, expected {expect}")
    return seen / (time.perf_counter() - start)


async def e3_catch_up(store: EventStore, pool: asyncpg.Pool, sizes: Sizes) -> dict[str, Any]:
    after, n = (await store.head())[0], sizes.e3_events
    generated = await generate(store, n)

    async def decoded(position: int) -> list[Any]:
        return await store.read_all(position, limit=READ_LIMIT)

    async def raw(position: int) -> list[Any]:
        rows: list[Any] = await pool.fetch(RAW_SCAN, position, READ_LIMIT)
        return rows

    await scan(raw, after, n)  # warm-up: buffers, hint bits, plans
    rates: dict[str, list[float]] = {"decoded": [], "raw": []}
    for round_ in range(sizes.e3_rounds):
        for fetch in (decoded, raw) if round_ % 2 == 0 else (raw, decoded):
            rates[fetch.__name__].append(await scan(fetch, after, n))
    dec, rw = common.median(rates["decoded"]), common.median(rates["raw"])
    figures = {"events": n, "generate_eps": round(generated), "decoded_eps": round(dec)}
    return figures | {"raw_eps": round(rw), "ratio": round(dec / rw, 2)}


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Each goal's ratio (E2 at the most writers) and PASS or MISS."""
    values = {"e1": figures["e1"]["ratio"], "e2": figures["e2"][-1]["ratio"]}
    values["e3"] = figures["e3"]["ratio"]
    passed = {
        k: v <= GOALS[k][2] if GOALS[k][1] == "<=" else v >= GOALS[k][2] for k, v in values.items()
    }
    return {k: (v, "PASS" if passed[k] else "MISS") for k, v in values.items()}


def report(figures: dict[str, Any]) -> str:
    e1, e3 = figures["e1"], figures["e3"]
    lines = [
        f"log before E1: {figures['seeded']}",
        "",
        f"E1  sequential single-event append, {e1['iterations']} each, interleaved blocks",
        f"    {'':22}{'p50 µs':>10}{'p99 µs':>10}",
        *(
            f"    {label:22}{e1[f'{key}_p50_us']:>10}{e1[f'{key}_p99_us']:>10}"
            for key, label in E1_ROWS.items()
        ),
        f"    append/select1 p50 = {e1['ratio']}x   (append/plain insert = "
        f"{e1['append_per_insert']}x, context only)",
        "",
        "E2  concurrent writers, events/s (median of rounds)",
        f"    {'writers':>8}{'chained':>12}{'plain':>12}{'ratio':>8}",
        *(
            f"    {r['writers']:>8}{r['chained_eps']:>12}{r['plain_eps']:>12}{r['ratio']:>7}x"
            for r in figures["e2"]
        ),
        "",
        f"E3  catch-up read of {e3['events']} events, {READ_LIMIT} per page "
        f"(generated at {e3['generate_eps']} ev/s in 50-event appends)",
        f"    read_all decoded {e3['decoded_eps']:>10} ev/s",
        f"    raw keyset scan  {e3['raw_eps']:>10} ev/s",
        f"    decoded/raw = {e3['ratio']}x",
        "",
        "SUMMARY",
    ]
    for key, (value, verdict) in figures["verdicts"].items():
        label, op, goal = GOALS[key]
        lines.append(f"    {key.upper()} {label:<20}{value:>7}x  goal {op} {goal}x  {verdict}")
    notes = figures["notes"]
    return "\n".join([*lines, "    machine: " + ", ".join(f"{k}={v}" for k, v in notes.items())])


async def main(sizes: Sizes, cold: bool) -> dict[str, Any]:
    async with (
        common.bench_server() as (server_url, source),
        common.fresh_database(server_url) as url,
    ):
        pool = await create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            store = EventStore(pool, notify=False)
            await pool.execute(PLAIN_TABLE)
            figures: dict[str, Any] = {"sizes": asdict(sizes), "cold": cold}
            figures["notes"] = await common.machine_notes(pool, source)
            figures["seeded"] = "empty, never analyzed (--cold)"
            if not cold:
                rate = await generate(store, sizes.seed)
                figures["seeded"] = f"{sizes.seed} events seeded at {rate:.0f} ev/s, ANALYZEd"
            figures["e1"] = await e1_latency(store, pool, sizes)
            figures["e2"] = await e2_throughput(store, pool, sizes)
            figures["e3"] = await e3_catch_up(store, pool, sizes)
        finally:
            await pool.close()
    return figures | {"verdicts": verdicts(figures)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--cold", action="store_true", help="no seeded, analyzed history")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = common.run(main(QUICK if args.quick else FULL, args.cold))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
