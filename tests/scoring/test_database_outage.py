"""The scorer keeps scoring while its database is away, with the tokens it last knew.

A PostgreSQL of the test's own is stopped and started again (never the machine's). An API
app and a scorer app, each with its own pool, run on it. While it is down the scorer answers
200 with the deployed version, holds prediction rows in bounded memory (beyond the bound they
are dropped and counted), still refuses a token revoked before, and answers 503 only for what
needs the database (feedback) or once its tokens are older than `auth_max_stale_seconds`.
When the database returns, the held rows are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY

from app.main import create_app
from app.resources import Resources
from app.scorer_app import create_scorer_app
from app.services import tokens
from app.settings import Settings
from app.store.events import EventStore
from app.store.migrate import migrate
from app.store.watch import LogWatcher
from domain.events import EventMeta, JobRequested
from domain.tokens import IssueToken
from tests.conftest import running
from tests.own_postgres import OwnPostgres, own_postgres
from tests.scoring.helpers import deployed

pytestmark = pytest.mark.processes

_DROPPED = "model_ledger_prediction_log_dropped_rows_total"
BOUND = 40  # prediction rows the scorer may hold in memory
EXTRA = 15  # rows scored past the bound while the database is away
ROW = {"rows": [[0.3, -1.2, 0.5, 2.0]]}


@pytest.fixture
async def database() -> AsyncIterator[OwnPostgres]:
    with own_postgres() as server:
        await asyncio.to_thread(migrate, server.url)
        yield server


def _settings(home: Path, database: OwnPostgres, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "database_url": database.url,
        "redis_url": redis_url,
        "checkpoint_interval_seconds": 3600,
        "queue_name": f"model-ledger-test:{uuid.uuid4().hex[:12]}",
        "dispatch_jobs": False,
        "prediction_sample_rate": 1.0,
        "prediction_log_flush_seconds": 0.05,
        "prediction_log_max_pending_rows": BOUND,
        "scorer_instance": "outage-test",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@dataclass
class Stack:
    """The API (setup, revocations) and the scorer under test, on the test's own database."""

    api: httpx.AsyncClient
    api_resources: Resources
    scorer: httpx.AsyncClient
    scorer_resources: Resources

    async def token(self, role: str, subject: str) -> dict[str, str]:
        issued = await tokens.issue(
            self.api_resources.store,
            self.api_resources.projector,
            self.api_resources.minter,
            IssueToken(subject=subject, role=role),
            meta=EventMeta(actor="test-setup", role="admin"),
        )
        # the scorer learns of it within a poll; the test must not depend on how soon
        await self.scorer_resources.authenticator.sync()
        return {"Authorization": f"Bearer {issued.token}"}

    async def score(self, headers: dict[str, str]) -> httpx.Response:
        return await self.scorer.post(
            "/v1/score/fraud", params={"environment": "staging"}, json=ROW, headers=headers
        )


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def apps(
    database: OwnPostgres, tmp_path: Path, redis_url: str
) -> AsyncIterator[StackFactory]:
    """`await apps(**scorer settings)`: both apps running, "fraud" deployed in staging."""
    async with contextlib.AsyncExitStack() as exits:

        async def make(**scorer_overrides: object) -> Stack:
            home = tmp_path / "home"
            api_settings = _settings(home, database, redis_url)
            scorer_settings = _settings(home, database, redis_url, **scorer_overrides)
            api_app = await exits.enter_async_context(running(create_app(api_settings)))
            scorer_app = await exits.enter_async_context(
                running(create_scorer_app(scorer_settings))
            )
            made = Stack(
                await exits.enter_async_context(_client(api_app)),
                api_app.state.resources,
                await exits.enter_async_context(_client(scorer_app)),
                scorer_app.state.resources,
            )

            async def auth(role: str, subject: str | None = None) -> dict[str, str]:
                return await made.token(role, subject or f"{role}-{uuid.uuid4().hex[:6]}")

            headers, _ = await deployed(made.api, auth, made.api_resources)
            await _until(lambda: _answers(made, headers, 200), "the scorer to serve")
            return made

        yield make


def _client(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger.test")


async def _answers(stack: Stack, headers: dict[str, str], status: int) -> bool:
    return (await stack.score(headers)).status_code == status


async def _until(
    check: Callable[[], Awaitable[bool] | bool], what: str, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while not await _holds(check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _holds(value: Awaitable[bool] | bool) -> bool:
    return value if isinstance(value, bool) else await value


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value(_DROPPED, {"reason": reason}) or 0.0


async def _logged(database: OwnPostgres) -> set[str]:
    conn = await asyncpg.connect(database.url)
    try:
        return {str(r[0]) for r in await conn.fetch("SELECT prediction_id FROM predictions")}
    finally:
        await conn.close()


async def test_scoring_goes_on_while_the_database_is_away_and_the_log_catches_up(
    apps: StackFactory, database: OwnPostgres
) -> None:
    ledger = await apps()
    scorer = await ledger.token("scorer", "app")
    victim = await ledger.token("scorer", "victim")
    admin = await ledger.token("admin", "operator")
    before = await ledger.score(victim)
    assert before.status_code == 200
    version = before.json()["version"]
    victim_id = await ledger.api_resources.pool.fetchval(
        "SELECT token_id FROM tokens WHERE subject = 'victim'"
    )
    revoked = await ledger.api.delete(f"/v1/tokens/{victim_id}", headers=admin)
    assert revoked.status_code == 200
    await _until(lambda: _answers(ledger, victim, 401), "the revocation to reach the scorer")
    log = ledger.scorer_resources.scoring.predictions
    await log.flush()
    assert log.pending_rows == 0
    dropped_before = _dropped("database_unavailable")

    await asyncio.to_thread(database.stop)
    table = ledger.scorer_resources.authenticator
    # longer than any per-token cache: every token is now vouched for by the table alone
    await _until(lambda: (table.age_seconds() or 0) > 6, "the outage to outlast a cache")
    kept = []
    for _ in range(BOUND):
        answer = await ledger.score(scorer)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == version
        kept += answer.json()["prediction_ids"]
    await log.flush()  # the writer tried, and holds the rows for the database's return
    assert log.pending_rows == BOUND
    lost = []
    for _ in range(EXTRA):
        answer = await ledger.score(scorer)
        assert answer.status_code == 200 and answer.json()["version"] == version
        lost += answer.json()["prediction_ids"]
    assert _dropped("database_unavailable") - dropped_before == EXTRA
    assert (await ledger.score(victim)).status_code == 401
    assert (await ledger.score({"Authorization": "Bearer mlt_nope_nope"})).status_code == 401
    feedback = await ledger.scorer.post(
        "/v1/feedback", json={"prediction_id": kept[0], "reward": 1}, headers=scorer
    )
    assert feedback.status_code == 503, feedback.text
    assert feedback.headers["content-type"].startswith("application/problem+json")
    ready = await ledger.scorer.get("/ready")
    assert ready.status_code == 200 and ready.json()["database"] == "unavailable"

    await asyncio.to_thread(database.start)

    async def written() -> bool:
        return set(kept) <= await _logged(database)

    await _until(written, "the held rows to be written")
    assert not set(lost) & await _logged(database)
    assert (await ledger.score(victim)).status_code == 401
    assert (await ledger.score(scorer)).status_code == 200
    feedback = await ledger.scorer.post(
        "/v1/feedback", json={"prediction_id": kept[0], "reward": 1}, headers=scorer
    )
    assert feedback.status_code == 202, feedback.text
    assert (await ledger.scorer.get("/ready")).json()["database"] == "ok"


async def test_past_the_staleness_bound_it_refuses_then_recovers(
    apps: StackFactory, database: OwnPostgres
) -> None:
    bound = 3.0
    ledger = await apps(auth_max_stale_seconds=bound)
    scorer = await ledger.token("scorer", "app")
    await _until(lambda: _answers(ledger, scorer, 200), "the token to reach the scorer")
    stopping = time.monotonic()
    await asyncio.to_thread(database.stop)
    statuses = []

    async def refused() -> bool:
        statuses.append((await ledger.score(scorer)).status_code)
        return statuses[-1] == 503

    await _until(refused, "the stale token table to refuse")
    # the last read may precede the stop by a poll at most
    assert time.monotonic() - stopping >= bound - 0.5
    assert set(statuses) == {200, 503} or set(statuses) == {503}
    answer = await ledger.score(scorer)
    assert answer.status_code == 503 and "token table" in answer.json()["detail"]
    assert (await ledger.scorer.get("/ready")).status_code == 503

    await asyncio.to_thread(database.start)
    await _until(lambda: _answers(ledger, scorer, 200), "scoring to resume")
    assert (await ledger.scorer.get("/ready")).status_code == 200


async def test_the_log_watcher_listens_again_after_the_database_restarts(
    database: OwnPostgres,
) -> None:
    pool = await asyncpg.create_pool(database.url, min_size=1, max_size=2)
    other = await asyncpg.create_pool(database.url, min_size=1, max_size=2)
    assert pool is not None and other is not None
    watcher = LogWatcher(EventStore(pool), database.url, reconnect_seconds=0.1)
    subscription = watcher.subscribe()
    await watcher.start()
    try:
        await asyncio.to_thread(database.stop)
        await _until(lambda: not watcher.listening, "the loss to be noticed")
        await asyncio.to_thread(database.start)
        await _until(lambda: watcher.listening, "listening again")
        await subscription.wait(0)  # forget the wake-ups of the loss and the reconnection
        writer = EventStore(other, notify=True)
        event = JobRequested(job_id=str(uuid.uuid4()), kind="compile", name="m", version=1)
        meta = EventMeta(actor="elsewhere", role="admin")
        began = time.monotonic()
        await _until(lambda: _appended(writer, event, meta), "an append elsewhere")
        await subscription.wait(30)
        assert time.monotonic() - began < 10, "woken by the poll's timeout, not a notification"
    finally:
        await watcher.stop()
        await pool.close()
        await other.close()


async def _appended(writer: EventStore, event: JobRequested, meta: EventMeta) -> bool:
    try:
        await writer.append("model-m", [event], meta=meta, expected_version=None)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False  # the pool's connections died with the server: a fresh one next time
    return True
