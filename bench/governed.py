"""The writes bench's stage: a server on a fresh database, and the targets its writes act on.

`stack()` starts `model-ledger serve --no-worker` on a database of its own (bench/common.py)
and Redis (`MODEL_LEDGER_BENCH_REDIS_URL`, else the local default, else a private
redis-server) with a queue of its own, emptied after. `prepare()` makes, through the API
wherever the API can, one target per measured write (see bench/writes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

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
SETUP_CLIENTS = 16
VERSIONS_PER_MODEL = 10  # of the models whose versions are approved and promoted
APPEND_BATCH = 500
T = TypeVar("T")


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
    pid: int  # the server's


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
                yield Stack(url, Path(home), env, pool, source, redis_source, server.pid)
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


class RawCreates:
    """`POST /v1/models` over one keep-alive connection, each request written and its answer
    read by hand. The concurrent rates use it, not httpx: httpx took about 0.7 ms of CPU a
    request, so 32 of its clients needed most of a core at 1,400 creates/s, a core the
    servers on this 2-core machine then lacked (the raw client takes a few µs). A connection
    left idle longer than the server keeps one (uvicorn: 5 s) is opened again before use."""

    IDLE_SECONDS = 2.0

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self._address = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = (
            f"POST /v1/models HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._used = 0.0

    async def open(self) -> RawCreates:
        await self.close()
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._used = time.monotonic()
        self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def create(self, name: str) -> None:
        if time.monotonic() - self._used > self.IDLE_SECONDS:
            await self.open()
        assert self._reader is not None, "open() first"
        assert self._writer is not None
        body = json.dumps(
            {"name": name, "risk_tier": "low", "owner": "bench", "description": "writes"}
        ).encode()
        self._writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = common.response_length(head)
        assert length is not None  # the head is whole
        rest = await self._reader.readexactly(length - len(head))
        if not head.startswith(b"HTTP/1.1 201"):
            raise RuntimeError(f"POST /v1/models: {(head + rest)[:500]!r}")
        self._used = time.monotonic()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def create_rate(creators: list[RawCreates], seconds: float, prefix: str) -> float:
    """POST /v1/models per second, each of `creators` writing back to back (model names
    `prefix-...`, new in each call)."""

    async def work(i: int, tag: str, deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await creators[i].create(f"{prefix}-{tag}-{i}-{done}")
            done += 1
        return done

    return await common.tasks_rate(len(creators), seconds, work)


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
    api: Api, running: Stack, texts: dict[int, str], each: int, history: int, via_api: bool
) -> tuple[Targets, dict[str, Any]]:
    """`each` targets per measured write, a `history`-event model, and the seconds taken."""
    pool = running.pool
    notes: dict[str, Any] = {}
    short = [f"short-{i}" for i in range(each)]
    reg = [f"reg-{i}" for i in range(2 * each)]
    gov = [f"gov-{i}" for i in range(-(-2 * each // VERSIONS_PER_MODEL))]
    began = time.perf_counter()
    await limited(SETUP_CLIENTS, (api.create(name) for name in [*reg, *gov, "canary"]))
    await short_models(api, short)
    notes["models_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    notes["history"] = await long_model(api, pool, "long", history, via_api)
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
