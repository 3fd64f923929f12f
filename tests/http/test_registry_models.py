"""`GET /v1/registry?model=`: some models of the registry, now or as of any instant, are
exactly their part of the whole view (each starts from its own snapshot)."""

from __future__ import annotations

import httpx

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.http.test_audit_views import apply_changes, assert_problem, governance_flow, keyed


async def test_some_models_as_of_any_instant_are_their_part_of_the_registry(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    flow = await governance_flow(client, auth, resources, capture=True)
    anyone = await auth("scorer")
    assert (await create_model(client, flow.ci, "other")).status_code == 201
    for name, then in flow.captured.items():  # before "other" was registered
        as_of = str(then["as_of"]["position"])
        for models in (["m"], ["m", "other"]):
            params = {"as_of": as_of, "model": models}
            only = await client.get("/v1/registry", params=params, headers=anyone)
            assert only.status_code == 200, only.text
            assert only.json() == then, f"{models} as of {name}"

    now = (await client.get("/v1/registry", headers=anyone)).json()
    assert [m["name"] for m in now["models"]] == ["m", "other"]
    for models in (["m"], ["other"], ["other", "m"]):
        found = await client.get("/v1/registry", params={"model": models})
        assert found.status_code == 401  # no token: nothing is told
        found = await client.get("/v1/registry", params={"model": models}, headers=anyone)
        assert found.json()["models"] == [m for m in now["models"] if m["name"] in models]

    # the diff of one model from the empty registry rebuilds that model alone
    first = flow.captured["model"]["as_of"]["position"]
    span = await client.get(
        "/v1/registry/diff", params={"from": "0", "model": "other"}, headers=anyone
    )
    other = [m for m in now["models"] if m["name"] == "other"]
    assert apply_changes({}, span.json()["changes"]) == keyed({"models": other})
    since = await client.get(
        "/v1/registry/diff", params={"from": str(first), "model": "m"}, headers=anyone
    )
    m_then = flow.captured["model"]
    m_now = {"models": [m for m in now["models"] if m["name"] == "m"]}
    assert apply_changes(keyed(m_then), since.json()["changes"]) == keyed(m_now)

    for path in ("/v1/registry", "/v1/registry/diff"):
        params = {"from": "0", "model": ["m", "nope"]}
        assert_problem(await client.get(path, params=params, headers=anyone), 404)
