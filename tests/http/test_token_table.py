"""The in-memory token table: it authenticates without the database, a token issued here works
at once, and past `auth_max_stale_seconds` without a successful read it refuses (503)."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
import pytest

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.services.authenticator import Authenticator, TokensStale
from app.settings import Settings
from app.store.events import EventStore
from app.store.projections import all_projections
from app.store.projector import Projector
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import running
from tests.http.test_tokens_and_auth import assert_problem
from tests.workers.jobs_helpers import wait_for

META = EventMeta(actor="test-setup", role="admin")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _issue(resources: Resources, subject: str, role: str = "scorer") -> tokens.IssuedToken:
    command = IssueToken(subject=subject, role=role)
    return await tokens.issue(
        resources.store, resources.projector, resources.minter, command, meta=META
    )


async def test_the_table_authenticates_without_the_database(
    database_url: str, resources: Resources
) -> None:
    live = await _issue(resources, "Live-App")
    gone = await _issue(resources, "gone-app")
    await tokens.revoke(
        resources.store, resources.projector, resources.authenticator, gone.token_id,
        reason="", meta=META,
    )  # fmt: skip
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    clock = Clock()
    table = Authenticator(EventStore(pool), max_stale_seconds=60, clock=clock)
    await table.sync()
    await pool.close()  # from here on, any round trip would fail
    principal = await table.authenticate(live.token)
    assert principal is not None
    assert (principal.subject, principal.role, principal.token_id) == (
        "live-app",
        "scorer",
        live.token_id,
    )
    assert await table.authenticate(gone.token) is None
    assert await table.authenticate("mlt_0123456789abcdef_nope") is None
    clock.now += 59
    assert await table.authenticate(live.token) is not None
    clock.now += 2
    with pytest.raises(TokensStale, match="limit 60 s"):
        await table.authenticate(live.token)


async def test_a_token_issued_by_this_process_works_at_once_another_within_a_read(
    database_url: str, resources: Resources
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        store = EventStore(pool)
        table = Authenticator(store)
        await table.sync()
        projector = Projector(store, all_projections())
        mine = await tokens.issue(
            store, projector, resources.minter, IssueToken(subject="mine", role="ci"), meta=META
        )
        assert await table.authenticate(mine.token) is not None  # no follower ran meanwhile
        elsewhere = await _issue(resources, "elsewhere")  # another store: another process
        assert await table.authenticate(elsewhere.token) is None  # unknown until read
        await table.sync()
        assert await table.authenticate(elsewhere.token) is not None
    finally:
        await pool.close()


async def test_a_stale_table_answers_503_problems(settings: Settings) -> None:
    stale = msgspec.structs.replace(settings, auth_max_stale_seconds=0.0)
    async with running(create_app(stale)) as app:
        resources: Resources = app.state.resources
        issued = await _issue(resources, "app")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            answer = await client.get(
                "/v1/models", headers={"Authorization": f"Bearer {issued.token}"}
            )
            assert "token table" in assert_problem(answer, 503)["detail"]
            assert (await client.get("/health")).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert "model_ledger_auth_tokens_age_seconds" in metrics

            async def counted() -> bool:  # the table follows the log: the token's append
                return "model_ledger_auth_tokens_live 1.0" in (await client.get("/metrics")).text

            await wait_for(counted, seconds=10, every=0.02)
