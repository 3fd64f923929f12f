"""The log: every model's story appended at once, as a fleet's appends interleave."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from app.store.events import EventStore
from bench import common
from bench.audit_base import Sizes, log
from bench.audit_fleet import Append, Ledger
from bench.audit_story import ModelSim
from domain.decide import model_stream


def _trim(appends: list[Append], budget: int) -> tuple[list[Append], int]:
    """The appends cut to at most `budget` events (the model's quota ends mid-story)."""
    kept, count = [], 0
    for meta, events, ids in appends:
        if count >= budget:
            break
        take = events[: budget - count]
        kept.append((meta, take, ids[: len(take)] if ids is not None else None))
        count += len(take)
    return kept, count


def _quotas(model_events: int, models: int) -> list[int]:
    """Each model's share of the events, the remainder spread over the first ones."""
    return [model_events // models + (i < model_events % models) for i in range(models)]


async def _tell(sim: ModelSim, quota: int, ledger: Ledger) -> int:
    """Append a model's story until its quota is used up; the versions it reached."""
    stream, remaining, number, reached = model_stream(sim.name), quota, 0, 0
    while remaining > 0:
        story = sim.registration() if number == 0 else sim.lifecycle(number)
        appends, count = _trim(story, remaining)
        reached, remaining, number = number, remaining - count, number + 1
        # a version's appends are pipelined: group commit gathers the fleet's into batches
        await asyncio.gather(
            *(
                ledger.store.append(stream, events, meta=meta, expected_version=None, event_ids=ids)
                for meta, events, ids in appends
            )
        )
        ledger.appended += count
        ledger.appends += len(appends)
        await ledger.set_policies()
    return reached


async def generate(store: EventStore, sizes: Sizes, seed: int) -> dict[str, Any]:
    """Append `sizes.events` events over `sizes.models` models, every model at once."""
    policy_events = max(3, sizes.events // 25_000)
    model_events = sizes.events - policy_events
    if model_events < 2 * sizes.models:
        raise SystemExit("--events must be at least twice --models (plus a few policy events)")
    ledger = Ledger(store, policy_events, model_events)
    quotas = _quotas(model_events, sizes.models)
    sims = [ModelSim(i, seed, ledger) for i in range(sizes.models)]
    # The generator's own bookkeeping (every model's versions and slots) would make each
    # full collection walk ~100,000 objects; it makes no cycles worth collecting meanwhile.
    gc.collect()
    gc.disable()
    with common.GcClock().active() as gc_clock:
        start = time.perf_counter()
        reporter = asyncio.create_task(_progress(ledger, sizes.events, start))
        try:
            tellings = (_tell(sim, quota, ledger) for sim, quota in zip(sims, quotas, strict=True))
            versions = await asyncio.gather(*tellings)
            await ledger.set_policies(everything=True)
        finally:
            reporter.cancel()
            gc.enable()
        elapsed = time.perf_counter() - start
    return _generated(ledger, sizes, versions, elapsed) | {
        "gc_seconds": round(gc_clock.seconds, 2),
        "names": [s.name for s in sims],
    }


def _generated(ledger: Ledger, sizes: Sizes, versions: list[int], elapsed: float) -> dict[str, Any]:
    total = ledger.appended + len(ledger.plan)
    if total != sizes.events:
        raise RuntimeError(f"generated {total} events, meant {sizes.events}")
    appends = ledger.appends + len(ledger.plan)
    return {
        "events": total,
        "seconds": round(elapsed, 1),
        "events_per_s": round(total / elapsed),
        "appends": appends,
        "events_per_append": round(total / appends, 2),
        "policy_events": len(ledger.plan),
        "versions": sum(versions),
        "versions_per_model": round(sum(versions) / sizes.models, 1),
    }


async def _progress(ledger: Ledger, total: int, start: float) -> None:
    while True:
        await asyncio.sleep(15)
        done = ledger.appended
        rate = done / (time.perf_counter() - start)
        log(f"  generated {done:,}/{total:,} ({rate:,.0f} ev/s)")
