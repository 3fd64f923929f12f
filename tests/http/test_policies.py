"""Policies per risk tier: read one, and change some fields while the rest keep the tier's
current values (PUT merges the fields given)."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory


async def test_a_partial_put_keeps_the_tiers_current_values(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin")
    # given: the low tier's built-in policy (approvals expire after 365 days, not 180)
    before = await client.get("/v1/policies/low", headers=admin)
    assert before.status_code == 200, before.text
    assert before.json()["version"] == 0
    assert before.json()["policy"]["approval_expiry_days"] == 365
    # when: one field changes
    put = await client.put("/v1/policies/low", json={"required_approvals": 2}, headers=admin)
    # then: that field changed, every other kept the tier's value
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1
    expected = before.json()["policy"] | {"required_approvals": 2}
    assert put.json()["policy"] == expected
    assert (await client.get("/v1/policies/low", headers=admin)).json() == put.json()
    # and again: what the first change set is kept too (not the generic defaults)
    thresholds = {"auc": {"min": 0.7}}
    again = await client.put(
        "/v1/policies/low", json={"metric_thresholds": thresholds}, headers=admin
    )
    assert again.json()["version"] == 2
    assert again.json()["policy"] == expected | {"metric_thresholds": thresholds}
    # a given field is replaced whole (a mapping is not merged key by key)
    replaced = await client.put(
        "/v1/policies/low", json={"metric_thresholds": {"f1": {"min": 0.5}}}, headers=admin
    )
    assert replaced.json()["policy"]["metric_thresholds"] == {"f1": {"min": 0.5}}
    # other tiers are untouched, and the list agrees with the single reads
    listed = (await client.get("/v1/policies", headers=admin)).json()["policies"]
    for item in listed:
        single = await client.get(f"/v1/policies/{item['risk_tier']}", headers=admin)
        assert single.json() == item
    assert [p["version"] for p in listed] == [3, 0, 0]


async def test_policy_reads_and_bad_changes(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    admin, scorer = await auth("admin"), await auth("scorer")
    high = await client.get("/v1/policies/high", headers=scorer)  # any role reads
    assert high.status_code == 200
    assert high.json()["policy"]["required_approvals"] == 2
    assert (await client.get("/v1/policies/extreme", headers=admin)).status_code == 404
    assert (
        await client.put("/v1/policies/extreme", json={"required_approvals": 2}, headers=admin)
    ).status_code == 404
    for body in (
        {"required_approvals": 0},
        {"required_approvals": None},
        {"approval_expiry_days": "soon"},
        {"no_such_field": 1},
    ):
        refused = await client.put("/v1/policies/high", json=body, headers=admin)
        assert refused.status_code in (400, 422), (body, refused.text)
    after = await client.get("/v1/policies/high", headers=admin)
    assert after.json() == high.json()  # nothing was written
    forbidden = await client.put("/v1/policies/high", json={}, headers=scorer)
    assert forbidden.status_code == 403
