"""Console sessions in PostgreSQL: expiry by idle time and by age, only a digest of the id
stored, and one session shared by two API processes."""

from __future__ import annotations

import hashlib

import httpx
from litestar import Litestar

from app.main import create_app
from app.resources import Resources
from app.settings import Settings
from app.ui.sessions import Sessions
from tests.conftest import TokenFactory, running
from tests.ui.console import Console


async def test_a_session_lives_while_used_and_not_past_its_lifetime(resources: Resources) -> None:
    now = [1_000.0]
    store = Sessions(idle_seconds=10, max_seconds=25, clock=lambda: now[0])
    session_id, opened = await store.open(resources.pool, "digest")
    assert opened.token_digest == "digest" and opened.csrf_token
    for moment in (1_009.0, 1_018.0, 1_025.0):
        now[0] = moment
        found = await store.get(resources.pool, session_id)
        assert found is not None and found.csrf_token == opened.csrf_token, moment
    now[0] = 1_025.5
    assert await store.get(resources.pool, session_id) is None
    assert await store.count(resources.pool) == 0  # an expired session found is deleted


async def test_an_idle_session_ends_and_ids_are_neither_stored_nor_guessable(
    resources: Resources,
) -> None:
    now = [1_000.0]
    store = Sessions(idle_seconds=10, clock=lambda: now[0])
    first, _ = await store.open(resources.pool, "d")
    second, _ = await store.open(resources.pool, "d")
    assert first != second and len(first) >= 40
    keys = {r[0] for r in await resources.pool.fetch("SELECT session_sha256 FROM console_sessions")}
    assert keys == {hashlib.sha256(i.encode()).hexdigest() for i in (first, second)}
    now[0] = 1_010.5
    assert await store.get(resources.pool, first) is None
    assert await store.get(resources.pool, "") is None
    assert await store.get(resources.pool, "made-up") is None


async def test_opening_a_session_sweeps_the_expired_ones(resources: Resources) -> None:
    now = [1_000.0]
    store = Sessions(idle_seconds=10, max_seconds=100, clock=lambda: now[0])
    for _ in range(3):
        await store.open(resources.pool, "old")
    now[0] = 1_020.0
    fresh, _ = await store.open(resources.pool, "new")
    assert await store.count(resources.pool) == 1
    assert await store.get(resources.pool, fresh) is not None


async def test_revoked_tokens_close_every_session_of_theirs(resources: Resources) -> None:
    store = Sessions()
    mine = [(await store.open(resources.pool, "mine"))[0] for _ in range(2)]
    other, _ = await store.open(resources.pool, "other")
    await store.close_token(resources.pool, "mine")
    assert [await store.get(resources.pool, i) for i in mine] == [None, None]
    assert await store.get(resources.pool, other) is not None


async def test_a_session_opened_on_one_process_works_on_another(
    app: Litestar, settings: Settings, auth: TokenFactory
) -> None:
    """Two API apps (two processes behind a load balancer) on one database: a browser signed
    in on the first uses the second, and signing out on the second ends it on the first."""
    headers = await auth("auditor")
    token = headers["Authorization"].removeprefix("Bearer ")
    async with running(create_app(settings)) as other:
        first = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l.test")
        second = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other), base_url="http://l.test"
        )
        async with first, second:
            browser = Console(first, token)
            await browser.sign_in()
            second.cookies.set("ml_session", first.cookies["ml_session"], path="/ui")
            on_second = await second.get("/ui")
            assert on_second.status_code == 200, on_second.headers
            assert "Signed in as" in on_second.text and "(auditor)" in on_second.text
            elsewhere = Console(second, token)
            elsewhere.csrf = browser.csrf  # the same session: the same CSRF token
            assert (await elsewhere.post("/ui/sign-out", {})).status_code == 303
            assert (await first.get("/ui")).status_code == 303
