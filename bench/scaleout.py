"""Scale-out: what a second API or scorer process adds, and what an idle one costs.

One run, one fresh database and one Redis (bench/governed.py's stage: `serve --no-worker`
with a queue of its own), a second `serve --no-worker` on the same stores, then a
`model-ledger worker` and two `model-ledger scorer` processes:

S1  POST /v1/models from 8, then 32 concurrent clients (the raw keep-alive client of
    bench/governed.py, one connection each: httpx clients took most of a core the servers
    needed), all on one API, then half on each of two APIs; rounds alternate, the median round
    is reported. The second API runs throughout (following the log while the first takes
    every write). Ratio: 2 APIs / 1 API (issue goal >= 1.0x, aim 1.5x), judged at 32 clients:
    8 back-to-back clients do not keep one API busy (each waits out its commit), so at 8 the
    ratio says how two processes share 8 clients' commits, not what a second one adds.
S2  CPU of each process (its own and its children's user + system time from /proc, as % of
    one core) over a quiet window (nothing written) and over a window in which the first
    API takes POST /v1/models paced to 200 events/s (32 clients sharing one schedule). The
    second API, the worker and the scorers take no request: they only follow the log.
    Issue goal: an idle replica < 2% of a core while others write 200 events/s.
S3  POST /v1/score at concurrency 16 (bench/score_http.py's raw keep-alive client) on one
    scorer, then 8 connections on each of two; the model is a 50-tree LightGBM binary model
    taken through the API (register, compile by the worker, approve, promote). Ratio: two
    scorers / one.

The bench's own clients run on the same machine as every server: on 2 cores a second
process mostly competes for the cores the first one and the clients already use.

    uv run python -m bench.scaleout [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil

from bench import common, score_http
from bench.governed import (
    Api,
    RawCreates,
    Stack,
    client,
    create_rate,
    lightgbm_text,
    ok,
    stack,
    tokens,
)
from tests.faults.harness import Process

CLIENTS = 8
WRITE_CLIENTS = (8, 32)  # S1; the goal is judged at the last
PACED_EVENTS_PER_S = 200.0
PACED_CLIENTS = 32  # enough in flight to hold the pace while a write takes up to 150 ms
SCORE_TREES = 50
SCORE_ROWS = 1_000


@dataclass(frozen=True)
class Sizes:
    write_seconds: float  # per S1 measurement
    write_rounds: int  # S1: 1 and 2 APIs alternate; the median round is reported
    cpu_seconds: float  # per S2 window
    settle_seconds: float  # after processes start, before any S2 window
    score_seconds: float  # per S3 measurement
    score_rounds: int


FULL = Sizes(10.0, 3, 30.0, 10.0, 5.0, 3)
QUICK = Sizes(2.0, 1, 5.0, 3.0, 1.0, 1)


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str]) -> Any:
    """A `model-ledger` process for the block; stopped (Ctrl-C) after, its output shown
    when the block fails."""
    process = Process(args, env)
    try:
        yield process
    except BaseException:
        print(f"{args} output:\n{process.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        process.stop()


def apis_on(urls: Sequence[str], ci: str, count: int) -> list[Api]:
    """`count` clients, one connection each, spread evenly over `urls`."""
    return [Api(client(urls[i % len(urls)]), ci, "") for i in range(count)]


@contextlib.asynccontextmanager
async def connected(urls: Sequence[str], ci: str, count: int = CLIENTS) -> AsyncIterator[list[Api]]:
    apis = apis_on(urls, ci, count)
    try:
        for api in apis:  # every connection open before anything is timed
            ok(await api.client.get("/health"), 200)
        yield apis
    finally:
        await asyncio.gather(*(a.client.aclose() for a in apis))


async def writes_one_vs_two(urls: list[str], ci: str, sizes: Sizes) -> dict[str, Any]:
    """S1: creates/s of each of WRITE_CLIENTS clients on the first API, then split over both."""
    figures: dict[str, Any] = {}
    for count in WRITE_CLIENTS:
        setups = {
            "one_api": [RawCreates(urls[0], ci) for _ in range(count)],
            "two_apis": [RawCreates(urls[i % len(urls)], ci) for i in range(count)],
        }
        for creators in setups.values():  # every connection open before anything is timed
            await asyncio.gather(*(c.open() for c in creators))
        try:
            for creators in setups.values():
                await create_rate(creators, sizes.write_seconds / 2, "s1")  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in setups}
            for r in range(sizes.write_rounds):
                order = list(setups) if r % 2 == 0 else list(setups)[::-1]
                for name in order:
                    rates[name].append(await create_rate(setups[name], sizes.write_seconds, "s1"))
        finally:
            await asyncio.gather(*(c.close() for cs in setups.values() for c in cs))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        figures[str(count)] = {
            **{f"{name}_ops_per_s": round(value, 1) for name, value in medians.items()},
            "rounds": {name: [round(v, 1) for v in values] for name, values in rates.items()},
            "ratio": round(medians["two_apis"] / medians["one_api"], 2),
        }
    return {"by_clients": figures, "ratio": figures[str(WRITE_CLIENTS[-1])]["ratio"]}


def cpu_seconds(pid: int) -> float:
    """User + system seconds of a process and its live children so far."""
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


async def cpu_window(
    pids: dict[str, int], seconds: float, load: Callable[[float], Any] | None = None
) -> tuple[dict[str, float], Any]:
    """% of one core each process used over `seconds`, and what `load(seconds)` returned."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.perf_counter()
    outcome = await load(seconds) if load is not None else await asyncio.sleep(seconds)
    wall = time.perf_counter() - start
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return {name: round(100 * value / wall, 2) for name, value in used.items()}, outcome


async def paced_creates(apis: list[Api], per_second: float, seconds: float) -> int:
    """POST /v1/models at `per_second` (clients take turns on one schedule); how many."""
    tickets, start, tag = itertools.count(), time.perf_counter(), os.urandom(4).hex()

    async def work(api: Api) -> int:
        done = 0
        while (at := start + next(tickets) / per_second) < start + seconds:
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await api.create(f"s2-{tag}-{id(api)}-{done}")
            done += 1
        return done

    return sum(await asyncio.gather(*(work(api) for api in apis)))


async def idle_cpu(
    running_stack: Stack, url: str, ci: str, pids: dict[str, int], sizes: Sizes
) -> dict[str, Any]:
    """S2: each process's CPU, quiet and while the first API writes 200 events/s."""
    pool = running_stack.pool
    await asyncio.sleep(sizes.settle_seconds)
    quiet, _ = await cpu_window(pids, sizes.cpu_seconds)
    async with connected([url], ci, PACED_CLIENTS) as apis:
        head = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        began = time.perf_counter()
        writing, creates = await cpu_window(
            pids, sizes.cpu_seconds, lambda s: paced_creates(apis, PACED_EVENTS_PER_S, s)
        )
        elapsed = time.perf_counter() - began
        events = await pool.fetchval("SELECT max(position) FROM events") - head
    return {
        "quiet_pct": quiet,
        "writing_pct": writing,
        "events_per_s": round(events / elapsed, 1),
        "creates_per_s": round(creates / elapsed, 1),
    }


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


async def deploy(running_stack: Stack, folder: Path) -> list[bytes]:
    """A 50-tree model promoted to production through the API; score requests (distinct
    rows) carrying a scorer token."""
    artifact = folder / "model.txt"
    artifact.write_text(await asyncio.to_thread(lightgbm_text, SCORE_TREES))
    admin = (running_stack.home / "admin.token").read_text().strip()
    token, _ = await asyncio.to_thread(score_http.deploy, running_stack.url, admin, artifact)
    rows = np.random.default_rng(2).normal(size=(SCORE_ROWS, 30))
    return score_http.score_requests(rows, token)


async def scores_one_vs_two(
    ports: list[int], requests: list[bytes], sizes: Sizes
) -> dict[str, Any]:
    """S3: score requests/s at concurrency 16 on the first scorer, then split over two."""
    setups = {"one_scorer": ports[:1], "two_scorers": ports}
    for targets in setups.values():
        await score_http.rate_of(targets, requests, sizes.score_seconds / 2)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in setups}
    failures = 0
    for r in range(sizes.score_rounds):
        order = list(setups) if r % 2 == 0 else list(setups)[::-1]
        for name in order:
            rate, failed = await score_http.rate_of(setups[name], requests, sizes.score_seconds)
            rates[name].append(rate)
            failures += failed
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        **{f"{name}_rps": round(value) for name, value in medians.items()},
        "rounds": {name: [round(v) for v in values] for name, values in rates.items()},
        "ratio": round(medians["two_scorers"] / medians["one_scorer"], 2),
        "failures": failures,
    }


async def main(sizes: Sizes, quick: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": asdict(sizes), "quick": quick}
    async with stack() as first:
        ci, _ = await tokens(first.url, first.home)
        env = first.env
        with (
            tempfile.TemporaryDirectory(prefix="ml-bench-scaleout-") as folder,
            running(["serve", "--no-worker", "--port", "0"], env) as second,
        ):
            urls = [first.url, await asyncio.to_thread(second.listening)]
            figures["notes"] = await common.machine_notes(first.pool, first.source)
            figures["writes"] = await writes_one_vs_two(urls, ci, sizes)
            with (
                running(["worker"], env) as worker,
                running(["scorer", "--port", "0"], env) as scorer_a,
                running(["scorer", "--port", "0"], env) as scorer_b,
            ):
                requests = await deploy(first, Path(folder))
                scorer_urls = [await asyncio.to_thread(s.listening) for s in (scorer_a, scorer_b)]
                ports = [port_of(u) for u in scorer_urls]
                for port in ports:  # both load the promoted version before anything is timed
                    await asyncio.to_thread(score_http.wait_scoring, port, requests[0])
                pids = {
                    "api_writing": first.pid,
                    "api_idle": second.pid,
                    "worker": worker.pid,
                    "scorer": scorer_a.pid,
                }
                figures["cpu"] = await idle_cpu(first, first.url, ci, pids, sizes)
                figures["scores"] = await scores_one_vs_two(ports, requests, sizes)
        figures["notes"] |= {
            "redis": first.redis_source,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }
    return figures


CPU_ROWS = {
    "api_writing": "API taking the writes",
    "api_idle": "second API (idle replica)",
    "worker": "worker",
    "scorer": "scorer (no requests)",
}
IDLE_GOAL_PCT = 2.0


def report(figures: dict[str, Any]) -> str:
    writes, cpu, scores = figures["writes"], figures["cpu"], figures["scores"]
    sizes = figures["sizes"]
    idle = cpu["writing_pct"]["api_idle"]
    verdict = "PASS" if idle < IDLE_GOAL_PCT else "MISS"
    cpu_title = f"S2 CPU, % of one core, {sizes['cpu_seconds']:g} s windows"
    lines = [
        "Scale-out: one fresh database and Redis; two `serve --no-worker`, a worker and two "
        "scorers, and the bench's clients, all on this machine",
        *(["--quick: short windows, one round"] if figures["quick"] else []),
        "",
        f"    {'':44}{'one':>9}{'two':>9}{'two/one':>9}",
        *(
            f"    {f'S1 POST /v1/models, {count} clients, ops/s':44}"
            f"{w['one_api_ops_per_s']:>9.1f}{w['two_apis_ops_per_s']:>9.1f}{w['ratio']:>8.2f}x"
            for count, w in writes["by_clients"].items()
        ),
        f"    {f'S3 POST /v1/score, {score_http.CONCURRENCY} connections, req/s':44}"
        f"{scores['one_scorer_rps']:>9}{scores['two_scorers_rps']:>9}{scores['ratio']:>8.2f}x",
        f"    (median of {sizes['write_rounds']} / {sizes['score_rounds']} rounds of "
        f"{sizes['write_seconds']:g} s / {sizes['score_seconds']:g} s; non-200 scores: "
        f"{scores['failures']})",
        "",
        f"    {cpu_title:44}{'quiet':>9}{'writing':>9}",
        *(
            f"    {label:44}{cpu['quiet_pct'][key]:>9.2f}{cpu['writing_pct'][key]:>9.2f}"
            for key, label in CPU_ROWS.items()
        ),
        f"    writing: {cpu['events_per_s']} events/s reached ({cpu['creates_per_s']} creates/s"
        f", paced to {PACED_EVENTS_PER_S:g} events/s) through the first API",
        "",
        "SUMMARY",
        f"    {f'S1 two APIs / one, {WRITE_CLIENTS[-1]} clients':29}{writes['ratio']:>6.2f}x  "
        "goal >= 1.0x (aim 1.5x)  "
        f"{'PASS' if writes['ratio'] >= 1.0 else 'MISS'}",
        f"    S2 idle replica, writing     {idle:>6.2f}%  goal < {IDLE_GOAL_PCT:g}% of a core  "
        f"{verdict}",
        f"    S2 idle replica / writing API{idle / cpu['writing_pct']['api_writing']:>7.2f}x",
        f"    S3 two scorers / one         {scores['ratio']:>6.2f}x",
    ]
    notes = ", ".join(f"{k}={v}" for k, v in figures["notes"].items())
    return "\n".join([*lines, f"    machine: {notes}"])


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = common.run(main(QUICK if args.quick else FULL, args.quick))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
