"""The score route's fast path answers exactly as the route does, and hands it everything else."""

from __future__ import annotations

import httpx
import msgspec

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import TokenFactory, running
from tests.scoring.helpers import deployed, rows_with_missing

ROW = {"rows": [[0.1, 0.2, None, 1.0]]}


async def test_the_fast_path_and_the_route_give_the_same_answer(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    rows = {"rows": rows_with_missing(5, seed=8)}
    fast = await client.post("/v1/score/fraud?environment=staging", json=rows, headers=scorer)
    # an escaped value and a parameter it does not know: the route answers these
    routed = await client.post(
        "/v1/score/fraud?environment=stag%69ng&trace=1", json=rows, headers=scorer
    )
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    one, two = fast.json(), routed.json()
    assert one.pop("prediction_ids") != two.pop("prediction_ids")
    assert one == two
    assert list(fast.json()) == list(routed.json())  # the same members, in the same order
    # both logged their rows
    await resources.scoring.predictions.flush()
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 10


async def test_requests_the_fast_path_cannot_answer_get_the_routes_problem_details(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    url = "/v1/score/fraud?environment=staging"
    cases = [
        (await client.post(url, json=ROW, headers=await auth("auditor")), 403),
        (await client.post(url, json=ROW), 401),
        (await client.post("/v1/score/fraud?environment=STAGING", json=ROW, headers=scorer), 404),
        (await client.post(url, json={"rows": [[1.0]]}, headers=scorer), 422),
        (await client.post(url, content=b"[", headers=scorer), 400),
        (await client.get(url, headers=scorer), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    # failures never reach the log
    await resources.scoring.predictions.flush()
    assert await resources.pool.fetchval("SELECT count(*) FROM predictions") == 0


async def test_a_body_past_the_limit_is_refused_413_even_where_scoring_would_succeed(
    settings: Settings,
) -> None:
    small = msgspec.structs.replace(settings, score_max_body_bytes=2_000)
    async with running(create_app(small)) as app:
        resources: Resources = app.state.resources

        async def auth(role: str) -> dict[str, str]:
            command = IssueToken(subject=f"{role}-small", role=role)
            meta = EventMeta(actor="test", role="admin")
            issued = await tokens.issue(
                resources.store, resources.projector, resources.minter, command, meta=meta
            )
            return {"Authorization": f"Bearer {issued.token}"}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
            headers, _ = await deployed(http, auth, resources)
            url = "/v1/score/fraud?environment=staging"
            big = {"rows": [[0.123456789] * 4] * 100}
            refused = await http.post(url, json=big, headers=headers)
            assert refused.status_code == 413, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            within = await http.post(url, json={"rows": big["rows"][:10]}, headers=headers)
            assert within.status_code == 200, within.text
