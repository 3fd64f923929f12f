"""G2, the registry as of the past, and G3, a projections rebuild; a projector run timed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from app.resources import Resources
from bench import common
from bench.append import RAW_SCAN, READ_LIMIT, scan
from bench.audit_base import Sizes, log

AS_OF_FRACTIONS = (0.25, 0.5, 0.75, 0.99)


async def timed_projection(res: Resources, run: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    """Events/s of a projector run (catch-up or rebuild), logging its progress meanwhile."""
    with common.GcClock().active() as gc_clock:
        reporter = asyncio.create_task(_checkpoints(res))
        start = time.perf_counter()
        try:
            reached = await run()
        finally:
            reporter.cancel()
        elapsed = time.perf_counter() - start
    return {
        "events": reached,
        "seconds": round(elapsed, 1),
        "events_per_s": round(reached / elapsed),
        "gc_seconds": round(gc_clock.seconds, 2),
    }


async def _checkpoints(res: Resources) -> None:
    while True:
        await asyncio.sleep(30)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            # committed checkpoints: a projection's run may be one long transaction
            rows = await res.pool.fetch(
                "SELECT name, position FROM projection_checkpoints ORDER BY name"
            )
            log("  checkpoints " + ", ".join(f"{r[0]} {r[1]:,}" for r in rows))


# --- G2: the registry as of the past -----------------------------------------------------


async def _timed(call: Awaitable[object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = await call
    return result, time.perf_counter() - start


async def g2_registry(res: Resources, sizes: Sizes) -> dict[str, Any]:
    registry = res.registry
    head, _ = await res.store.head()
    positions = [max(1, int(head * f)) for f in AS_OF_FRACTIONS]
    current: list[float] = []
    past: dict[int, list[float]] = {p: [] for p in positions}
    await registry.view(None)  # warm-up: plans, buffers
    with common.GcClock().active() as gc_clock:
        for _ in range(sizes.registry_rounds):
            view, seconds = await _timed(registry.view(None))
            current.append(seconds)
            for position in positions:
                past[position].append((await _timed(registry.view(str(position))))[1])
                log(f"  as_of {position}: {past[position][-1]:.2f} s")
    states = await _state_timings(res, positions[1])
    size = _view_size(view)
    one = await _one_model_as_of(res, view, positions)
    pooled = [s for values in past.values() for s in values]
    current_p50, past_p50 = common.median(current), common.median(pooled)
    return {
        "positions": positions,
        "current_p50_ms": round(current_p50 * 1000),
        "as_of_p50_ms": round(past_p50 * 1000),
        "as_of_p50_ms_by_position": {
            str(p): round(common.median(v) * 1000) for p, v in past.items()
        },
        "ratio_by_position": {
            str(p): round(common.median(v) / current_p50, 2) for p, v in past.items()
        },
        **states,
        **one,
        **size,
        "gc_seconds": round(gc_clock.seconds, 2),
        "gc_collections": gc_clock.collections,
        "ratio": round(past_p50 / current_p50, 2),
    }


async def _state_timings(res: Resources, middle: int) -> dict[str, Any]:
    """Where the time goes (context): the state alone, without rendering."""
    _, current_state_s = await _timed(res.registry.current_state())
    _, state_at_s = await _timed(res.registry.state_at(middle))
    return {
        "current_state_ms": round(current_state_s * 1000),
        "state_at_middle_ms": round(state_at_s * 1000),
    }


def _view_size(view: Any) -> dict[str, Any]:
    """The view's size as JSON, and the time to encode it."""
    start = time.perf_counter()
    body = msgspec.json.encode(view)
    encode_s = time.perf_counter() - start
    return {
        "versions_in_view": sum(len(m.versions) for m in view.models),
        "view_json_mib": round(len(body) / 2**20, 1),
        "view_json_encode_ms": round(encode_s * 1000),
    }


async def _one_model_as_of(res: Resources, view: Any, positions: list[int]) -> dict[str, Any]:
    """The auditor's usual question: one model as of an instant (`?model=`)."""
    names = [m.name for m in view.models]
    one = [
        (await _timed(res.registry.view(str(position), [name])))[1]
        for name in names[:: max(1, len(names) // 20)]
        for position in positions
    ]
    return {
        "one_model_as_of_p50_ms": round(common.median(one) * 1000, 1),
        "one_model_as_of_p99_ms": round(sorted(one)[int(len(one) * 0.99)] * 1000, 1),
    }


# --- G3: rebuild vs the catch-up read ----------------------------------------------------


async def fingerprint(pool: asyncpg.Pool, tables: list[str]) -> dict[str, str]:
    """A digest of every projection table's rows: a rebuild must reproduce them exactly.

    Each row is digested by its columns' text (bytea columns by their md5, snapshots being
    gigabytes), and the row digests in sorted order digested again.
    """
    digests = {}
    for table in tables:
        columns = await pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
        parts = ", ".join(
            f"md5({c['column_name']})" if c["data_type"] == "bytea" else f"{c['column_name']}::text"
            for c in columns
        )
        digests[table] = await pool.fetchval(
            f"SELECT count(*) || ':' || coalesce(md5(string_agg(d, ',' ORDER BY d)), '') "
            f"FROM (SELECT md5(concat_ws('|', {parts})) AS d FROM {table}) rows"
        )
    return digests


async def g3_rebuild(res: Resources, sizes: Sizes) -> dict[str, Any]:
    store, pool, projector = res.store, res.pool, res.projector
    head, _ = await store.head()
    tables = [t for p in projector.projections for t in p.tables]

    async def decoded(position: int) -> list[Any]:
        return await store.read_all(position, limit=READ_LIMIT)

    async def raw(position: int) -> list[Any]:
        rows: list[Any] = await pool.fetch(RAW_SCAN, position, READ_LIMIT)
        return rows

    await scan(raw, 0, head)  # warm-up
    reads = [await scan(decoded, 0, head) for _ in range(sizes.read_rounds)]
    raw_rate = await scan(raw, 0, head)
    log(f"  catch-up read {common.median(reads):,.0f} ev/s decoded; rebuilding")
    before = await fingerprint(pool, tables)
    rebuild = await timed_projection(res, projector.rebuild)
    after = await fingerprint(pool, tables)
    read_rate = common.median(reads)
    return {
        "events": head,
        "read_decoded_eps": round(read_rate),
        "read_rounds_eps": [round(r) for r in reads],
        "raw_scan_eps": round(raw_rate),
        "rebuild_seconds": rebuild["seconds"],
        "rebuild_eps": rebuild["events_per_s"],
        "rebuild_gc_seconds": rebuild["gc_seconds"],
        "views_identical_after_rebuild": before == after,
        "ratio": round(rebuild["events_per_s"] / read_rate, 3),
    }
