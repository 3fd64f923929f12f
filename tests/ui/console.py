"""Driving the console in tests: a browser-like client per signed-in user, and a story."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, record_compiled, register_version

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
HOSTILE = '<script>alert("x")</script>'


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def assert_escaped(html: str, where: str = "") -> None:
    """The hostile text came back, but only escaped."""
    assert "<script>" not in html, where
    assert "&lt;script&gt;" in html, where


class Console:
    """A browser: cookies kept between requests, the session's CSRF token known."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token
        self.csrf = ""

    async def sign_in(self, next_: str | None = None) -> httpx.Response:
        form = await self.http.get("/ui/sign-in", params={"next": next_} if next_ else None)
        assert form.status_code == 200, form.text
        response = await self.http.post(
            "/ui/sign-in",
            data={"csrf_token": csrf_of(form.text), "token": self.token, "next": next_ or "/ui"},
        )
        assert response.status_code == 303, response.text
        self.csrf = csrf_of((await self.http.get("/ui")).text)
        return response

    async def get(self, url: str, **params: Any) -> httpx.Response:
        return await self.http.get(url, params=params or None)

    async def post(self, url: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        return await self.http.post(
            url, data={**data, **({"csrf_token": self.csrf} if csrf else {})}
        )


ConsoleFactory = Callable[..., AbstractAsyncContextManager[Console]]


def console_factory(app: Litestar, auth: TokenFactory) -> ConsoleFactory:
    """`async with open_console("auditor") as c:` a signed-in browser of that role."""

    @asynccontextmanager
    async def open_console(
        role: str,
        subject: str | None = None,
        *,
        base_url: str = "http://ledger.test",
        signed_in: bool = True,
    ) -> AsyncIterator[Console]:
        headers = await auth(role, subject)
        token = headers["Authorization"].removeprefix("Bearer ")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            console = Console(http, token)
            if signed_in:
                await console.sign_in()
            yield console

    return open_console


async def story(
    client: httpx.AsyncClient, resources: Resources, ci: dict[str, str], *, text: str = ""
) -> dict[str, int]:
    """Model "fraud": v1 champion in staging, v2 a canary there until a critical drift alert
    demoted it; v3 registered and compiled, awaiting approval. `text` goes into every field
    a user types (description, owner, tags, reasons)."""
    created = await client.post(
        "/v1/models",
        json={
            "name": "fraud",
            "risk_tier": "high",
            "description": f"{text}Scores card payments",
            "owner": text or "fraud-team",
            "tags": ["payments", text or "cards"],
        },
        headers=ci,
    )
    assert created.status_code == 201, created.text
    await create_model(client, ci, "churn", "low")
    numbers = []
    for seed in (1, 2, 3):
        version = await register_version(client, ci, "fraud", seed=seed)
        assert version.status_code == 201, version.text
        numbers.append(version.json()["version"])
        await record_compiled(resources, "fraud", numbers[-1])
    for body in (
        {"version": numbers[0], "environment": "staging"},
        {
            "version": numbers[1],
            "environment": "staging",
            "strategy": "canary",
            "traffic_percent": 10,
        },
    ):
        moved = await client.post("/v1/models/fraud/promotions", json=body, headers=ci)
        assert moved.status_code == 201, moved.text
    before_alert, _ = await resources.store.head()
    alert = await client.post(
        "/v1/models/fraud/drift-alerts",
        json={
            "version": numbers[1],
            "statistic": "psi",
            "value": 0.4,
            "threshold": 0.2,
            "severity": "critical",
            "feature": "amount",
        },
        headers=ci,
    )
    assert alert.status_code == 201, alert.text
    return {
        "v1": numbers[0],
        "v2": numbers[1],
        "v3": numbers[2],
        "before_alert": before_alert,
        "alert": alert.json()["position"],
    }
