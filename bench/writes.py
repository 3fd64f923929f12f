"""Governance writes over HTTP, as a CI pipeline meets them: one server, one table of ratios.

One `model-ledger serve --no-worker` on a fresh database (bench/common.py: the bench's
PostgreSQL server, a database of its own, dropped after) and Redis
(`MODEL_LEDGER_BENCH_REDIS_URL`, else the local default, else a private redis-server), with a
queue name of its own. httpx drives the latency rows over keep-alive connections, as a CI
pipeline's client would; the concurrent rates (W4) use a raw keep-alive client
(`bench.governed.RawCreates`), since 32 httpx clients took most of a core the server needed
(the scoring bench's reason for its raw client too). Every latency row is measured in
rotating interleaved blocks beside `GET /health`, the baseline; each write goes to a target of
its own prepared beforehand (one sample, one model or version), so no row measures a model
grown by the samples before it.

W1  POST /v1/models p50                       <= 4x GET /health p50
W2  registering a 50-tree LightGBM version p50 <= 2x POST /v1/models p50
W3  PATCH of a model with 10,000 events p50   <= 1.2x the same PATCH on a 10-event model
W4  POST /v1/models, 32 concurrent clients    >= 4x the ops/s of one client

How the targets are made:
- 10-event models: registered and patched 9 times through the API.
- the long model: registered and patched 9 times through the API, then its other events
  appended to the store in batches, each exactly the `model.updated` the PATCH handler writes
  (same data fields, same meta: actor and role of the CI token, nothing else), checked
  against the API-written ones; `--history-api` writes them all through PATCH instead (one
  client: concurrent PATCHes of one model only conflict and retry). The first PATCH after
  the history is written falls in the warm-up: W3 is a warm server's figure.
- versions: LightGBM binary models (31 leaves, 30 features) trained here on synthetic data,
  each upload a distinct file (the seed in its parameters section differs), each registered
  on a model of its own. Approvals need a certified build, so a `model-ledger worker` runs
  during setup only, compiles what the approvals and promotions use (one compile, the rest
  from its cache: one artifact) and stops before anything is measured; the compile jobs of
  the measured registrations wait in the queue.
- approve: a version approved by an approver who did not register it (four-eyes).
- promote: an approved version promoted `full` to production (gates: compiled, approvals).
- deployment change: `POST /deployment-changes` moving a canary's traffic in production
  between 10% and 20%, all on one model (its stream grows by one event a sample).

    uv run python -m bench.writes [--quick] [--history-api] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.governed import (
    Api,
    RawCreates,
    Targets,
    client,
    create_rate,
    lightgbm_text,
    ok,
    prepare,
    stack,
    tokens,
    variant,
)

CLIENT_COUNTS = (1, 8, 32)
ROWS = {
    "health": "GET /health (baseline)",
    "create": "POST /v1/models",
    "patch_short": "PATCH model, 10 events",
    "patch_long": "PATCH model, {history} events",
    "register_50": "register 50-tree LightGBM",
    "register_500": "register 500-tree LightGBM",
    "approve": "approve (four-eyes)",
    "promote": "promote full to production",
    "deploy": "deployment change (canary %)",
}
GOALS = {
    "w1": ("POST /v1/models / health p50", "<=", 4.0),
    "w2": ("register 50 trees / POST model", "<=", 2.0),
    "w3": ("PATCH long / PATCH 10 events", "<=", 1.2),
    "w4": ("creates/s 32 clients / 1", ">=", 4.0),
}


@dataclass(frozen=True)
class Sizes:
    samples: int  # per latency row, after warm-up
    block: int  # rows take turns in blocks of this many
    warmup: int  # per row, before any sample
    history: int  # events of the long model
    budget_seconds: float  # latency rows stop early past this (min 1/4 of the samples)
    rate_seconds: float  # per throughput measurement
    rate_rounds: int  # client counts alternate; the median round is reported


FULL = Sizes(200, 10, 5, 10_000, 600.0, 5.0, 3)
QUICK = Sizes(12, 4, 2, 1_000, 120.0, 1.0, 1)


def writes(
    api: Api, targets: Targets, texts: dict[int, str], canary: int
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each measured request, taking its own next target."""
    counter, tag = itertools.count(1), uuid.uuid4().hex[:6]
    percents = itertools.cycle([10.0, 20.0])

    async def health() -> Any:
        return ok(await api.client.get("/health"), 200)

    return {
        "health": health,
        "create": lambda: api.create(f"new-{tag}-{next(counter)}"),
        "patch_short": lambda: api.patch(next(targets.short), 1_000_000 + next(counter)),
        "patch_long": lambda: api.patch("long", 1_000_000 + next(counter)),
        "register_50": lambda: api.register(
            next(targets.reg_50), variant(texts[50], next(counter))
        ),
        "register_500": lambda: api.register(
            next(targets.reg_500), variant(texts[500], next(counter))
        ),
        "approve": lambda: api.approve(*next(targets.to_approve)),
        "promote": lambda: api.promote(*next(targets.to_promote)),
        "deploy": lambda: api.canary("canary", canary, next(percents)),
    }


def summary(samples: list[float], baseline: float) -> dict[str, float]:
    p50 = common.percentile(samples, 50)
    return {
        "n": len(samples),
        "p50_ms": round(p50 / 1000, 2),
        "p99_ms": round(common.percentile(samples, 99) / 1000, 2),
        "ops_per_s": round(1e6 / statistics.fmean(samples), 1),
        "p50_per_health": round(p50 / baseline, 2),
    }


async def creates_per_second(url: str, ci: str, sizes: Sizes) -> dict[int, dict[str, float]]:
    """POST /v1/models ops/s of 1, 8 and 32 clients (one connection each, the raw client),
    median round."""
    creators = [await RawCreates(url, ci).open() for _ in range(max(CLIENT_COUNTS))]
    try:
        await create_rate(creators[:8], sizes.rate_seconds / 2, "tp")  # warm-up
        rates: dict[int, list[float]] = {n: [] for n in CLIENT_COUNTS}
        for r in range(sizes.rate_rounds):
            for n in CLIENT_COUNTS[r % 3 :] + CLIENT_COUNTS[: r % 3]:
                rates[n].append(await create_rate(creators[:n], sizes.rate_seconds, "tp"))
    finally:
        await asyncio.gather(*(c.close() for c in creators))
    first = statistics.median(rates[1])
    return {
        n: {
            "ops_per_s": round(statistics.median(r), 1),
            "ratio": round(statistics.median(r) / first, 2),
        }
        for n, r in rates.items()
    }


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    rows, rates = figures["rows"], figures["throughput"]
    values = {
        "w1": rows["create"]["p50_per_health"],
        "w2": rows["register_50"]["p50_ms"] / rows["create"]["p50_ms"],
        "w3": rows["patch_long"]["p50_ms"] / rows["patch_short"]["p50_ms"],
        "w4": rates[max(CLIENT_COUNTS)]["ratio"],
    }
    passed = {
        k: v <= GOALS[k][2] if GOALS[k][1] == "<=" else v >= GOALS[k][2] for k, v in values.items()
    }
    return {k: (round(v, 2), "PASS" if passed[k] else "MISS") for k, v in values.items()}


def report(figures: dict[str, Any]) -> str:
    rows, sizes, setup = figures["rows"], figures["sizes"], figures["setup"]
    history = sizes["history"]
    lines = [
        f"Governance writes over HTTP: one `serve --no-worker`, httpx keep-alive, rows "
        f"interleaved in blocks of {sizes['block']}, each write on a target of its own",
        f"long model: {setup['history']}",
    ]
    if figures["quick"]:
        lines.append(f"--quick: few samples, and the long model has {history:,} events, not 10,000")
    lines += [
        "",
        f"    {'':32}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'ops/s':>8}{'p50/health':>12}",
        *(
            f"    {ROWS[key].format(history=f'{history:,}'):32}{r['n']:>5}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['ops_per_s']:>8.1f}{r['p50_per_health']:>11.2f}x"
            for key, r in rows.items()
        ),
        "",
        "    POST /v1/models from concurrent clients (one raw keep-alive connection each, "
        "median of rounds)",
        *(
            f"    {n:>6} client{'s' if n > 1 else ' '}{r['ops_per_s']:>10.1f} ops/s"
            f"{r['ratio']:>8.2f}x one client"
            for n, r in figures["throughput"].items()
        ),
        "",
        "SUMMARY",
    ]
    for key, (value, verdict) in figures["verdicts"].items():
        label, op, goal = GOALS[key]
        lines.append(f"    {key.upper()} {label:<32}{value:>7.2f}x  goal {op} {goal}x  {verdict}")
    spent = ", ".join(f"{k} {v}" for k, v in setup.items() if k.endswith("_s"))
    notes = ", ".join(f"{k}={v}" for k, v in figures["notes"].items())
    return "\n".join([*lines, f"    setup seconds: {spent}", f"    machine: {notes}"])


async def main(sizes: Sizes, quick: bool, via_api: bool) -> dict[str, Any]:
    began = time.perf_counter()
    texts = {trees: await asyncio.to_thread(lightgbm_text, trees) for trees in (50, 500)}
    train_s = round(time.perf_counter() - began, 1)
    async with stack() as running:
        ci, approver = await tokens(running.url, running.home)
        async with client(running.url) as http:
            api = Api(http, ci, approver)
            targets, setup = await prepare(
                api, running, texts, sizes.samples + sizes.warmup, sizes.history, via_api
            )
            notes = await common.machine_notes(running.pool, running.source)
            ops = writes(api, targets, texts, setup.pop("canary_version"))
            samples = await common.budgeted_latencies(
                ops,
                sizes.samples,
                sizes.block,
                warmup=sizes.warmup,
                budget_seconds=sizes.budget_seconds,
                min_iterations=sizes.samples // 4,
            )
        throughput = await creates_per_second(running.url, ci, sizes)
    baseline = common.percentile(samples["health"], 50)
    figures: dict[str, Any] = {
        "sizes": asdict(sizes),
        "quick": quick,
        "rows": {key: summary(values, baseline) for key, values in samples.items()},
        "throughput": throughput,
        "setup": {"train_s": train_s, **setup},
        "notes": notes
        | {"redis": running.redis_source, "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "artifact_kib": {trees: round(len(text) / 1024) for trees, text in texts.items()},
    }
    return figures | {"verdicts": verdicts(figures)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--history-api", action="store_true", help="write the long history by PATCH alone (slow)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = common.run(main(QUICK if args.quick else FULL, args.quick, args.history_api))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
