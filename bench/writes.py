"""Governance writes over HTTP, as a CI pipeline meets them: one server, one table of ratios.

One `model-ledger serve --no-worker` on a fresh database (bench/common.py: the bench's
PostgreSQL server, a database of its own, dropped after) and Redis
(`MODEL_LEDGER_BENCH_REDIS_URL`, else the local default, else a private redis-server), with a
queue name of its own. httpx drives it over keep-alive connections. Every latency row is
measured in rotating interleaved blocks beside `GET /health`, the baseline; each write goes to
a target of its own prepared beforehand (one sample, one model or version), so no row
measures a model grown by the samples before it.

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
  client: concurrent PATCHes of one model only conflict and retry).
- versions: LightGBM binary models (31 leaves, 30 features) trained here on synthetic data,
  each upload a distinct file (the seed in its parameters section differs), each registered
  on a model of its own. Approvals need a certified build, so a `model-ledger worker` runs
  during setup only, compiles what the approvals and promotions use (one compile, the rest
  from its cache: one artifact) and stops before anything is measured; the compile jobs of
  the measured registrations wait in the queue.
- approve: a version approved by an approver who did not register it (four-eyes).
- promote: an approved version promoted `full` to production (gates: compiled, approvals).
- deployment change: `POST /deployment-changes` moving a canary's traffic in production.

    uv run python -m bench.writes [--quick] [--history-api] [--json PATH]
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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import lightgbm
import numpy as np
from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis as RedisClient
from redis.exceptions import RedisError

from app.resources import create_pool
from app.store.events import EventStore
from bench import common
from domain.events import EventMeta, ModelUpdated
from tests.faults.harness import Process, Redis, scratch

REDIS_ENV = "MODEL_LEDGER_BENCH_REDIS_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
CI, APPROVER = "bench-ci", "bench-approver"
CLIENT_COUNTS = (1, 8, 32)
SETUP_CLIENTS = 16
VERSIONS_PER_MODEL = 10  # of the models whose versions are approved and promoted
APPEND_BATCH = 500
T = TypeVar("T")
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


def lightgbm_text(trees: int) -> str:
    """A binary LightGBM model (31 leaves, 30 features) on synthetic data, as text."""
    rng = np.random.default_rng(trees)
    x = rng.normal(size=(5_000, 30))
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.normal(size=5_000) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": 0}
    booster = lightgbm.train(params | {"num_threads": 1}, lightgbm.Dataset(x, y), trees)
    text: str = booster.model_to_string()
    assert text.count("\n[seed: 0]\n") == 1, "the seed line this bench varies"
    return text


def variant(text: str, n: int) -> bytes:
    """The same trees as another file: only the recorded seed differs."""
    return text.replace("\n[seed: 0]\n", f"\n[seed: {n}]\n").encode()


def upload(artifact: bytes) -> dict[str, Any]:
    meta = {"format": "lightgbm", "metrics": {"auc": 0.9}, "lineage": {"git_commit": "0" * 40}}
    return {
        "artifact": ("model.txt", artifact, "text/plain"),
        "metadata": (None, json.dumps(meta), "application/json"),
    }


def ok(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in (statuses or (200, 201)):
        request = response.request
        raise RuntimeError(
            f"{request.method} {request.url.path}: {response.status_code} {response.text[:500]}"
        )
    return response.json()


async def limited(count: int, jobs: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await `jobs` with at most `count` running at once, results in order."""
    gate = asyncio.Semaphore(count)

    async def one(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


@dataclass
class Stack:
    url: str  # the server's
    home: Path
    env: dict[str, str]
    pool: asyncpg.Pool
    source: str  # where PostgreSQL came from
    redis_source: str


@contextlib.asynccontextmanager
async def redis_url() -> AsyncIterator[tuple[str, str]]:
    """(URL, where it came from): the env URL, the local default, or a private server."""
    if configured := os.environ.get(REDIS_ENV):
        yield configured, REDIS_ENV
        return
    probe = RedisClient.from_url(REDIS_DEFAULT, socket_connect_timeout=2)
    try:
        answers = bool(await probe.ping())
    except (OSError, RedisError):
        answers = False
    finally:
        await probe.aclose()
    if answers:
        yield REDIS_DEFAULT, "local default"
        return
    with scratch("mlw-") as folder:
        private = Redis(folder)
        private.start()
        try:
            yield private.url, "private redis-server"
        finally:
            private.kill()


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    """A fresh database, a queue of its own and `serve --no-worker` on them."""
    async with (
        common.bench_server() as (postgres, source),
        common.fresh_database(postgres, "ml_bench_writes") as database,
        redis_url() as (redis, redis_source),
    ):
        queue = f"model-ledger-bench:{uuid.uuid4().hex[:10]}"
        with tempfile.TemporaryDirectory(prefix="ml-bench-writes-") as home:
            env = {
                "MODEL_LEDGER_HOME": home,
                "MODEL_LEDGER_DATABASE_URL": database,
                "MODEL_LEDGER_REDIS_URL": redis,
                "MODEL_LEDGER_QUEUE_NAME": queue,
                "MODEL_LEDGER_LOG_LEVEL": "warning",
            }
            pool = await create_pool(database, min_size=1, max_size=4)
            server = Process(["serve", "--no-worker", "--port", "0"], env)
            try:
                url = await asyncio.to_thread(server.listening)
                yield Stack(url, Path(home), env, pool, source, redis_source)
            except BaseException:
                print(f"the server's output:\n{server.text()[-4000:]}", file=sys.stderr)
                raise
            finally:
                server.close()
                with contextlib.suppress(Exception):
                    await forget_queue(pool, redis, queue)
                await pool.close()


async def forget_queue(pool: asyncpg.Pool, url: str, queue: str) -> None:
    """Remove what the run left in Redis: its queue and the entries of its jobs."""
    jobs = await pool.fetch("SELECT data::json->>'job_id' FROM events WHERE type = 'job.requested'")
    prefixes = (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix)
    keys = [queue, queue + health_check_key_suffix]
    keys += [prefix + row[0] for row in jobs for prefix in prefixes]
    redis = RedisClient.from_url(url)
    try:
        for first in range(0, len(keys), 1_000):
            await redis.delete(*keys[first : first + 1_000])
    finally:
        await redis.aclose()


class Api:
    """The server through one keep-alive connection, as the CI token or the approver."""

    def __init__(self, client: httpx.AsyncClient, ci: str, approver: str) -> None:
        self.client = client
        self.ci = {"Authorization": f"Bearer {ci}"}
        self.approver = {"Authorization": f"Bearer {approver}"}

    async def create(self, name: str) -> Any:
        body = {"name": name, "risk_tier": "low", "owner": "bench", "description": "writes"}
        return ok(await self.client.post("/v1/models", json=body, headers=self.ci), 201)

    async def model(self, name: str) -> Any:
        return ok(await self.client.get(f"/v1/models/{name}", headers=self.ci), 200)

    async def patch(self, name: str, n: int) -> Any:
        body = {"description": f"revision {n}"}
        return ok(await self.client.patch(f"/v1/models/{name}", json=body, headers=self.ci), 200)

    async def register(self, name: str, artifact: bytes) -> Any:
        path = f"/v1/models/{name}/versions"
        return ok(await self.client.post(path, files=upload(artifact), headers=self.ci), 201)

    async def approve(self, name: str, version: int) -> Any:
        path = f"/v1/models/{name}/versions/{version}/approvals"
        body = {"decision": "approve", "comment": "bench"}
        return ok(await self.client.post(path, json=body, headers=self.approver), 201)

    async def promote(self, name: str, version: int) -> Any:
        body = {"version": version, "environment": "production", "strategy": "full"}
        path = f"/v1/models/{name}/promotions"
        return ok(await self.client.post(path, json=body, headers=self.ci), 201)

    async def canary(self, name: str, version: int, percent: float) -> Any:
        change = {"version": version, "environment": "production", "strategy": "canary"}
        body = {"changes": [change | {"traffic_percent": percent}]}
        path = f"/v1/models/{name}/deployment-changes"
        return ok(await self.client.post(path, json=body, headers=self.ci), 201)


def client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=url, timeout=300, limits=limits)


async def tokens(url: str, home: Path) -> tuple[str, str]:
    """A CI token and an approver's, made by the admin token `serve` wrote on first start."""
    admin = {"Authorization": f"Bearer {(home / 'admin.token').read_text().strip()}"}
    async with client(url) as http:
        made = [
            ok(await http.post("/v1/tokens", json={"subject": s, "role": r}, headers=admin), 201)
            for s, r in ((CI, "ci"), (APPROVER, "approver"))
        ]
    return made[0]["token"], made[1]["token"]


def round_robin(groups: list[list[T]]) -> list[T]:
    """The first of every group, then the second of every group, ...: concurrent writes
    taken in this order reach different models (writes to one model wait their turn)."""
    return [item for row in itertools.zip_longest(*groups) for item in row if item is not None]


async def short_models(api: Api, names: list[str]) -> None:
    """Models of 10 events, all through the API."""

    async def build(name: str) -> None:
        await api.create(name)
        for n in range(9):
            await api.patch(name, n)

    await limited(SETUP_CLIENTS, map(build, names))


async def long_model(api: Api, pool: asyncpg.Pool, name: str, events: int, via_api: bool) -> str:
    """A model of `events` events; says how they were written."""
    await api.create(name)
    through_api = events - 1 if via_api else min(9, events - 1)
    for n in range(through_api):
        await api.patch(name, n)
    store = EventStore(pool, notify=True)  # the server's projector is woken as by its own
    meta = EventMeta(actor=CI, role="ci")  # what a PATCH without request-id headers records
    for first in range(through_api, events - 1, APPEND_BATCH):
        last = min(first + APPEND_BATCH, events - 1)
        batch = [ModelUpdated(name=name, description=f"revision {n}") for n in range(first, last)]
        await store.append(f"model-{name}", batch, meta=meta, expected_version=first + 1)
    rows = await pool.fetch(
        "SELECT data::text, meta::text FROM events WHERE stream = $1 AND type = 'model.updated'",
        f"model-{name}",
    )
    shapes = {(tuple(json.loads(data)), meta) for data, meta in rows}
    if len(rows) != events - 1 or len(shapes) != 1:
        raise RuntimeError(f"the long model's updates differ from the API's: {shapes}")
    deadline = time.monotonic() + 900
    while (await api.model(name))["stream_version"] != events:  # the views have caught up
        if time.monotonic() > deadline:
            raise RuntimeError(f"the views never reached {events} events of {name}")
        await asyncio.sleep(0.2)
    if via_api:
        return f"{events} events, all written by PATCH"
    return (
        f"{events} events: {through_api + 1} through the API, the rest appended exactly as "
        "PATCH writes them"
    )


async def registered(api: Api, pairs: list[tuple[str, bytes]]) -> list[tuple[str, int]]:
    """(model, version) of each artifact registered on its model."""
    bodies = await limited(SETUP_CLIENTS, (api.register(m, a) for m, a in pairs))
    return [(m, body["version"]) for (m, _), body in zip(pairs, bodies, strict=True)]


async def compiled(env: dict[str, str], pool: asyncpg.Pool, count: int) -> None:
    """Run a worker until `count` versions are compiled, then stop it."""
    worker = Process(["worker"], env)
    try:
        deadline = time.monotonic() + 1_800
        while True:
            done, failed = await pool.fetchrow(
                "SELECT count(*) FILTER (WHERE type = 'version.compiled'), "
                "count(*) FILTER (WHERE type = 'job.failed') FROM events"
            )
            if done >= count:
                return
            if failed or time.monotonic() > deadline or worker.popen.poll() is not None:
                raise RuntimeError(
                    f"{done} of {count} compiled, {failed} jobs failed:\n{worker.text()[-3000:]}"
                )
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(worker.stop)


@dataclass
class Targets:
    """What each measured write acts on: one each, never used twice."""

    short: Iterator[str]
    reg_50: Iterator[str]
    reg_500: Iterator[str]
    to_approve: Iterator[tuple[str, int]]
    to_promote: Iterator[tuple[str, int]]


async def prepare(
    api: Api, running: Stack, sizes: Sizes, via_api: bool, texts: dict[int, str]
) -> tuple[Targets, dict[str, Any]]:
    """Everything the measured writes need, made before any is measured; seconds taken."""
    pool, each = running.pool, sizes.samples + sizes.warmup
    notes: dict[str, Any] = {}
    short = [f"short-{i}" for i in range(each)]
    reg = [f"reg-{i}" for i in range(2 * each)]
    gov = [f"gov-{i}" for i in range(-(-2 * each // VERSIONS_PER_MODEL))]
    began = time.perf_counter()
    await limited(SETUP_CLIENTS, (api.create(name) for name in [*reg, *gov, "canary"]))
    await short_models(api, short)
    notes["models_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    notes["history"] = await long_model(api, pool, "long", sizes.history, via_api)
    notes["history_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    base = variant(texts[50], 0)  # one artifact: one compile, the others from the cache
    slots = round_robin([[(name, base)] * VERSIONS_PER_MODEL for name in gov])
    versions = await registered(api, [("canary", base), *slots])
    versions += await registered(api, [("canary", base)])
    await compiled(running.env, pool, len(versions))
    notes["compile_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    by_model: dict[str, list[int]] = {}
    for name, number in versions:
        by_model.setdefault(name, []).append(number)
    champion, challenger = by_model.pop("canary")
    to_promote = [[(m, v) for v in numbers[::2]] for m, numbers in by_model.items()]
    to_approve = [[(m, v) for v in numbers[1::2]] for m, numbers in by_model.items()]
    approvals = [*round_robin(to_promote), ("canary", champion), ("canary", challenger)]
    await limited(SETUP_CLIENTS, (api.approve(*v) for v in approvals))
    await api.promote("canary", champion)
    notes["approvals_s"] = round(time.perf_counter() - began, 1)
    targets = Targets(
        short=iter(short),
        reg_50=iter(reg[:each]),
        reg_500=iter(reg[each:]),
        to_approve=iter(round_robin(to_approve)),
        to_promote=iter(round_robin(to_promote)),
    )
    return targets, notes | {"canary_version": challenger}


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
    """POST /v1/models ops/s of 1, 8 and 32 clients (one connection each), median round."""
    clients = [client(url) for _ in range(max(CLIENT_COUNTS))]
    apis = [Api(c, ci, "") for c in clients]
    try:
        await asyncio.gather(*(a.client.get("/health") for a in apis))  # connected beforehand

        async def work(i: int, tag: str, deadline: float) -> int:
            done = 0
            while time.perf_counter() < deadline:
                await apis[i].create(f"tp-{tag}-{i}-{done}")
                done += 1
            return done

        await common.tasks_rate(8, sizes.rate_seconds / 2, work)  # warm-up
        rates: dict[int, list[float]] = {n: [] for n in CLIENT_COUNTS}
        for r in range(sizes.rate_rounds):
            for n in CLIENT_COUNTS[r % 3 :] + CLIENT_COUNTS[: r % 3]:
                rates[n].append(await common.tasks_rate(n, sizes.rate_seconds, work))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
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
        "    POST /v1/models from concurrent clients (one connection each, median of rounds)",
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
            targets, setup = await prepare(api, running, sizes, via_api, texts)
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
