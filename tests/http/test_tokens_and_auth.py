"""Tokens, roles, and bad input at the HTTP edge: clear problems, never a 500."""

from __future__ import annotations

import httpx
import pytest

from app.resources import Resources
from tests.conftest import TokenFactory

PROBLEM = "application/problem+json"
ROLES = ["admin", "ci", "approver", "auditor", "scorer"]


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_admin_issues_a_token_that_works_at_once(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin")
    created = await client.post(
        "/v1/tokens", json={"subject": "ci-pipeline", "role": "auditor"}, headers=admin
    )
    assert created.status_code == 201
    body = created.json()
    assert body["subject"] == "ci-pipeline" and body["role"] == "auditor"
    token_headers = {"Authorization": f"Bearer {body['token']}"}
    assert (await client.get("/v1/events", headers=token_headers)).status_code == 200


async def test_issuing_is_an_attributed_event_that_never_holds_the_token(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin", "root-operator")
    body = (
        await client.post("/v1/tokens", json={"subject": "svc", "role": "scorer"}, headers=admin)
    ).json()
    page = (await client.get("/v1/events", params={"type": "token.issued"}, headers=admin)).json()
    event = next(e for e in page["events"] if e["data"]["subject"] == "svc")
    assert event["meta"]["actor"] == "root-operator" and event["meta"]["role"] == "admin"
    assert body["token"] not in str(event)
    assert event["data"]["token_sha256"] != body["token"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer mlt_nope_nope"},
    ],
)
async def test_missing_or_bad_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for response in [
        await client.get("/v1/events", headers=headers),
        await client.post("/v1/tokens", json={"subject": "x", "role": "ci"}, headers=headers),
        await client.get("/v1/audit/verify", headers=headers),
    ]:
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
async def test_only_admin_issues_tokens(
    client: httpx.AsyncClient, auth: TokenFactory, role: str
) -> None:
    response = await client.post(
        "/v1/tokens", json={"subject": "x", "role": "admin"}, headers=await auth(role)
    )
    assert_problem(response, 403)


@pytest.mark.parametrize("role", ["ci", "approver", "scorer"])
async def test_only_auditors_and_admins_read_the_log(
    client: httpx.AsyncClient, auth: TokenFactory, role: str
) -> None:
    headers = await auth(role)
    assert_problem(await client.get("/v1/events", headers=headers), 403)
    assert_problem(await client.get("/v1/audit/verify", headers=headers), 403)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"subject": "x"}', 400),
        (b'{"subject": "x", "role": "ci", "extra": 1}', 400),
        (b'{"subject": "x", "role": "superuser"}', 400),
        (b'{"subject": 5, "role": "ci"}', 400),
        (b'{"subject": "has spaces", "role": "ci"}', 422),
        (b'{"subject": "", "role": "ci"}', 422),
    ],
)
async def test_bad_bodies_are_problems_and_append_nothing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, body: bytes, status: int
) -> None:
    admin = await auth("admin")
    before, _ = await resources.store.head()
    response = await client.post(
        "/v1/tokens", content=body, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, status)
    assert (await resources.store.head())[0] == before


async def test_oversize_body_is_413(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    admin = await auth("admin")
    huge = b'{"subject": "' + b"x" * 100_000 + b'", "role": "ci"}'
    response = await client.post(
        "/v1/tokens", content=huge, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 413)


async def test_idempotent_token_request_returns_the_same_token_once(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    headers = {**await auth("admin"), "Idempotency-Key": "create-ci-token-1"}
    first = await client.post("/v1/tokens", json={"subject": "ci", "role": "ci"}, headers=headers)
    head, _ = await resources.store.head()
    again = await client.post("/v1/tokens", json={"role": "ci", "subject": "ci"}, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert (await resources.store.head())[0] == head
    other = await client.post(
        "/v1/tokens", json={"subject": "ci", "role": "auditor"}, headers=headers
    )
    body = assert_problem(other, 422)
    assert body["code"] == "idempotency_key_reused"
    assert (await resources.store.head())[0] == head


async def test_unknown_route_is_a_404_problem(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=await auth("admin")), 404)


async def test_events_page_through_the_log(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    headers = await auth("auditor")
    for n in range(4):
        await auth("ci", f"ci-{n}")
    first = (await client.get("/v1/events", params={"limit": 2}, headers=headers)).json()
    assert [e["position"] for e in first["events"]] == [1, 2] and first["next"] == 2
    rest = (await client.get("/v1/events", params={"after": first["next"]}, headers=headers)).json()
    assert [e["position"] for e in rest["events"]] == [3, 4, 5]
    assert_problem(await client.get("/v1/events", params={"limit": 0}, headers=headers), 400)
    assert_problem(await client.get("/v1/events", params={"after": "x"}, headers=headers), 400)


async def test_verify_reports_the_head(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    body = (await client.get("/v1/audit/verify", headers=await auth("auditor"))).json()
    assert body["ok"] is True and body["checked"] == 1 and body["first_broken_position"] is None
    assert len(body["head"]["hash"]) == 64


async def test_health_ready_and_metrics_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready")).json()
    assert ready["database"] == "ok" and ready["redis"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "model_ledger_requests_total" in metrics.text
