"""G1, a model's history: `GET /v1/models/{name}/history` in-process vs a plain SELECT."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec

from app.http.audit import event_out
from app.http.schemas import HistoryOut
from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from app.store import codec
from app.store.codec import CHAIN_COLUMNS
from bench import common
from bench.audit_base import Sizes
from domain import events as ev
from domain.decide import model_stream
from domain.tokens import IssueToken

HISTORY_LIMIT = 1_000_000  # what the history handler asks for
HISTORY_SELECT = f"SELECT {CHAIN_COLUMNS} FROM events WHERE stream = $1 ORDER BY version"

Read = Callable[[str], Awaitable[object]]


async def g1_history(
    res: Resources, settings: Settings, names: list[str], sizes: Sizes
) -> dict[str, Any]:
    headers = await _auditor(res)
    head, _ = await res.store.head()
    sample = random.Random(7).sample(names, min(sizes.history_models, len(names)))
    async with _client(res, settings) as client:
        events, kib = await _same_rows_on_every_path(res, client, headers, sample[0])
        ops = {name: _cycling(read, sample) for name, read in _reads(res, client, headers).items()}
        samples = await common.budgeted_latencies(
            ops,
            sizes.history_iterations,
            sizes.history_block,
            warmup=min(len(sample), 10),
            budget_seconds=sizes.history_budget_seconds,
            min_iterations=3 * sizes.history_block,
        )
    figures: dict[str, Any] = {
        "models_sampled": len(sample),
        "events_per_history": round(events),
        "response_kib": round(kib),
        "iterations": len(samples["http"]),
    }
    for name, values in samples.items():
        figures |= {f"{name}_p{q}_us": round(common.percentile(values, q)) for q in (50, 99)}
    figures["parts_ms"] = await _history_parts(res, sample, head)
    return figures | _ratios(samples)


async def _auditor(res: Resources) -> dict[str, str]:
    """The headers of an auditor's token, issued for the run."""
    issued = await tokens.issue(
        res.store,
        res.projector,
        res.minter,
        IssueToken(subject="bench-auditor", role="auditor"),
        meta=ev.EventMeta(actor="bench-setup", role="admin"),
    )
    return {"Authorization": f"Bearer {issued.token}"}


@asynccontextmanager
async def _client(res: Resources, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The Litestar app on the run's resources, called in-process."""
    app = create_app(settings, resources=res)
    async with (
        common.app_lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://ledger.bench",
        ) as client,
    ):
        yield client


async def _same_rows_on_every_path(
    res: Resources, client: httpx.AsyncClient, headers: dict[str, str], name: str
) -> tuple[int, float]:
    """The same rows on every path, or the comparison means nothing; (events, KiB)."""
    probe = await client.get(f"/v1/models/{name}/history", headers=headers)
    probe.raise_for_status()
    rows = await res.pool.fetch(HISTORY_SELECT, model_stream(name))
    body = probe.json()
    if [e["position"] for e in body["events"]] != [r["position"] for r in rows]:
        raise RuntimeError("the history endpoint and the SELECT disagree")
    return len(rows), len(probe.content) / 1024


def _reads(res: Resources, client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Read]:
    """A model's history read three ways: over HTTP, by the service, by a plain SELECT."""

    async def http(name: str) -> None:
        response = await client.get(f"/v1/models/{name}/history", headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"history of {name}: HTTP {response.status_code}")

    async def service(name: str) -> object:
        return await res.registry.history(name, None, None)

    async def select(name: str) -> object:
        return await res.pool.fetch(HISTORY_SELECT, model_stream(name))

    return {"http": http, "service": service, "select": select}


def _cycling(read: Read, sample: list[str]) -> Callable[[], Awaitable[object]]:
    models = itertools.cycle(sample)
    return lambda: read(next(models))


def _ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    p99 = {name: common.percentile(values, 99) for name, values in samples.items()}
    p50 = {name: common.percentile(values, 50) for name, values in samples.items()}
    return {
        "service_ratio": round(p99["service"] / p99["select"], 2),
        "http_p50_ratio": round(p50["http"] / p50["select"], 2),
        "ratio": round(p99["http"] / p99["select"], 2),
    }


# The handler's former path, for context (not a goal): the model's state decoded to check it
# exists, the instant, `EventStore.read_stored` (whose prepared statement, once PostgreSQL
# switches it to a generic plan, walks the primary key over the whole log), every row made an
# `EventOut`; and the same rows read by the (stream, version) index, decoded by asyncpg.
HISTORY_BY_VERSION = (
    f"SELECT {CHAIN_COLUMNS} FROM events WHERE stream = $1 AND position <= $2 ORDER BY version"
)


async def _history_parts(res: Resources, sample: list[str], head: int) -> dict[str, float]:
    """Median ms of each step the history handler takes, outside HTTP, and of alternatives."""
    timings: dict[str, list[float]] = {
        "history": [],
        "render": [],
        "alt_model_state": [],
        "alt_instant": [],
        "alt_read_stored": [],
        "alt_render_decoded": [],
        "alt_read_by_version": [],
    }

    def lap(part: str, since: float) -> float:
        now = time.perf_counter()
        timings[part].append(now - since)
        return now

    for name in sample[:10]:
        start = time.perf_counter()
        position, events = await res.registry.history(name, None, None)
        start = lap("history", start)
        msgspec.json.encode(
            HistoryOut(model=name, as_of_position=position, events=msgspec.Raw(events))  # type: ignore[arg-type]
        )
        start = lap("render", start)
        await res.registry.model_state(name)
        start = lap("alt_model_state", start)
        await res.registry.instant(None)
        start = lap("alt_instant", start)
        rows = await res.store.read_stored(0, HISTORY_LIMIT, stream=model_stream(name), until=head)
        start = lap("alt_read_stored", start)
        msgspec.json.encode(
            HistoryOut(model=name, as_of_position=head, events=[event_out(r) for r in rows])
        )
        start = lap("alt_render_decoded", start)
        by_version = await res.pool.fetch(HISTORY_BY_VERSION, model_stream(name), head)
        [codec.stored_from_row(r) for r in by_version]
        lap("alt_read_by_version", start)
    return {k: round(common.median(v) * 1000, 2) for k, v in timings.items()}
