"""The governance flow over HTTP, against real PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import (
    create_model,
    record_compiled,
    record_compliance,
    register_version,
)


async def ready_version(
    client: httpx.AsyncClient,
    resources: Resources,
    ci: dict[str, str],
    name: str,
    tier: str = "low",
    seed: int = 0,
) -> int:
    if (await client.get(f"/v1/models/{name}", headers=ci)).status_code == 404:
        assert (await create_model(client, ci, name, tier)).status_code == 201
    created = await register_version(client, ci, name, seed=seed)
    assert created.status_code == 201, created.text
    number: int = created.json()["version"]
    await record_compiled(resources, name, number)
    return number


async def test_ci_registers_a_version_that_requests_its_compile(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    assert (await create_model(client, ci, "fraud")).status_code == 409
    created = await register_version(client, ci, "fraud")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1 and body["state"] == "registered" and body["compile_job_id"]
    version = (await client.get("/v1/models/fraud/versions/1", headers=ci)).json()
    assert version["feature_names"] == ["amount", "age", "hour", "merchant"]
    assert version["registered_by"] == "pipeline" and version["compiled"] is None
    history = (await client.get("/v1/models/fraud/history", headers=await auth("auditor"))).json()
    assert [e["type"] for e in history["events"]] == [
        "model.registered",
        "version.registered",
        "job.requested",
    ]


async def test_full_flow_to_production(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    number = await ready_version(client, resources, ci, "credit", tier="high")
    await record_compliance(resources, "credit", number, passed=True)
    promote = {"version": number, "environment": "production", "strategy": "full"}
    blocked = await client.post("/v1/models/credit/promotions", json=promote, headers=ci)
    assert blocked.status_code == 409
    assert [g["name"] for g in blocked.json()["unmet_gates"]] == ["approvals"]
    for approver in ("risk-officer-1", "risk-officer-2"):
        decided = await client.post(
            f"/v1/models/credit/versions/{number}/approvals",
            json={"decision": "approve", "comment": "ok"},
            headers=await auth("approver", approver),
        )
        assert decided.status_code == 201, decided.text
    deployed = await client.post("/v1/models/credit/promotions", json=promote, headers=ci)
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["champion"] == number
    model = (await client.get("/v1/models/credit", headers=ci)).json()
    assert model["deployments"]["production"]["champion"] == number
    assert model["versions"][0]["state"] == "approved"


async def test_four_eyes(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    number = await ready_version(client, resources, await auth("ci", "alice"), "m")
    refused = await client.post(
        f"/v1/models/m/versions/{number}/approvals",
        json={"decision": "approve"},
        headers=await auth("approver", "alice"),
    )
    assert refused.status_code == 403 and refused.json()["code"] == "four_eyes"


async def test_high_risk_needs_two_distinct_approvers(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    number = await ready_version(client, resources, ci, "hr", tier="high")
    await record_compliance(resources, "hr", number, passed=True)
    bob = await auth("approver", "bob")
    url = f"/v1/models/hr/versions/{number}/approvals"
    assert (await client.post(url, json={"decision": "approve"}, headers=bob)).status_code == 201
    assert (await client.post(url, json={"decision": "approve"}, headers=bob)).status_code == 409
    plan = await client.post(
        "/v1/models/hr/promotions",
        json={"version": number, "environment": "production", "dry_run": True},
        headers=ci,
    )
    gates = {g["name"]: g for g in plan.json()["gates"]}
    assert plan.status_code == 200 and not plan.json()["allowed"]
    assert "1 of 2" in gates["approvals"]["detail"]


async def test_revoked_or_expired_approvals_do_not_count(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, admin = await auth("ci", "pipeline"), await auth("admin", "root")
    number = await ready_version(client, resources, ci, "rv")
    carol = await auth("approver", "carol")
    url = f"/v1/models/rv/versions/{number}/approvals"
    assert (await client.post(url, json={"decision": "approve"}, headers=carol)).status_code == 201
    assert (await client.get(f"/v1/models/rv/versions/{number}", headers=ci)).json()[
        "state"
    ] == "approved"
    revoked = await client.post(f"{url}/revocation", json={"reason": "new evidence"}, headers=carol)
    assert revoked.status_code == 201
    # compiled and, with no thresholds in the low tier's default policy, validated
    state = (await client.get(f"/v1/models/rv/versions/{number}", headers=ci)).json()["state"]
    assert state == "validated"
    # an approval that expires at once
    policy = await client.put(
        "/v1/policies/low", json={"required_approvals": 1, "approval_expiry_days": 0}, headers=admin
    )
    assert policy.status_code == 200 and policy.json()["version"] == 1
    assert (await client.post(url, json={"decision": "approve"}, headers=carol)).status_code == 201
    version = (await client.get(f"/v1/models/rv/versions/{number}", headers=ci)).json()
    assert version["state"] == "validated" and not version["approvals"][-1]["counts"]
    # changing policy is itself audited
    events = (await client.get("/v1/events", params={"type": "policy.set"}, headers=admin)).json()[
        "events"
    ]
    assert events[0]["meta"]["actor"] == "root" and events[0]["data"]["risk_tier"] == "low"


async def test_unmet_gates_409_and_dry_run_appends_nothing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    await create_model(client, ci, "g", "medium")
    number = (await register_version(client, ci, "g")).json()["version"]
    promote = {"version": number, "environment": "production"}
    head, _ = await resources.store.head()
    plan = await client.post(
        "/v1/models/g/promotions", json={**promote, "dry_run": True}, headers=ci
    )
    assert plan.status_code == 200
    assert (await resources.store.head())[0] == head
    blocked = await client.post("/v1/models/g/promotions", json=promote, headers=ci)
    assert blocked.status_code == 409
    unmet = {g["name"] for g in blocked.json()["unmet_gates"]}
    assert unmet == {g["name"] for g in plan.json()["gates"] if not g["passed"]}
    assert unmet == {"compiled", "compliance", "approvals"}
    assert (await resources.store.head())[0] == head


async def test_concurrent_promotions_one_wins(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    first = await ready_version(client, resources, ci, "c", seed=1)
    second = await ready_version(client, resources, ci, "c", seed=2)
    # two pipelines looked at the model, then promote at once, each against what it saw
    seen = await client.get("/v1/models/c", headers=ci)
    etag = seen.headers["etag"]
    assert etag == f'"{seen.json()["stream_version"]}"'
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/models/c/promotions",
                json={"version": v, "environment": "staging"},
                headers={**ci, "If-Match": etag},
            )
            for v in (first, second)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["code"] == "concurrency_conflict"
    slot = (await client.get("/v1/models/c", headers=ci)).json()["deployments"]["staging"]
    winner = next(r for r in responses if r.status_code == 201).json()["champion"]
    assert slot["champion"] == winner


async def test_rollback_returns_the_previous_good_champion(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    versions = [await ready_version(client, resources, ci, "rb", seed=s) for s in range(4)]
    for number in versions:
        ok = await client.post(
            "/v1/models/rb/promotions",
            json={"version": number, "environment": "staging"},
            headers=ci,
        )
        assert ok.status_code == 201, ok.text
    for expected in reversed(versions[:-1]):
        back = await client.post(
            "/v1/models/rb/rollbacks", json={"environment": "staging", "reason": "bad"}, headers=ci
        )
        assert back.status_code == 201 and back.json()["champion"] == expected
    exhausted = await client.post(
        "/v1/models/rb/rollbacks", json={"environment": "staging", "reason": "x"}, headers=ci
    )
    assert exhausted.status_code == 409


async def test_bad_model_file_is_422_and_appends_nothing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    await create_model(client, ci, "bad")
    head, _ = await resources.store.head()
    for artifact, metadata in [
        (b"tree\nversion=v4\nthis is not a model", None),
        (b"\x80\x04\x95pickle", {"format": "sklearn-skops"}),
        (b"{}", {"format": "xgboost-json"}),
    ]:
        response = await register_version(client, ci, "bad", artifact=artifact, metadata=metadata)
        assert response.status_code == 422, response.text
    unknown = await register_version(
        client, ci, "bad", metadata={"format": "lightgbm", "surprise": 1}
    )
    assert unknown.status_code == 422
    assert (await resources.store.head())[0] == head


async def test_drift_alert_on_a_canary_demotes_it(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    champion = await ready_version(client, resources, ci, "d", seed=1)
    canary = await ready_version(client, resources, ci, "d", seed=2)
    await client.post(
        "/v1/models/d/promotions", json={"version": champion, "environment": "staging"}, headers=ci
    )
    started = await client.post(
        "/v1/models/d/promotions",
        json={
            "version": canary,
            "environment": "staging",
            "strategy": "canary",
            "traffic_percent": 10,
        },
        headers=ci,
    )
    assert started.status_code == 201 and started.json()["challenger"] == canary
    alert = await client.post(
        "/v1/models/d/drift-alerts",
        json={
            "version": canary,
            "statistic": "psi",
            "value": 0.4,
            "threshold": 0.2,
            "severity": "critical",
            "feature": "amount",
        },
        headers=ci,
    )
    assert alert.status_code == 201, alert.text
    assert [a["action"] for a in alert.json()["actions"]] == ["demotion"]
    slot = (await client.get("/v1/models/d", headers=ci)).json()["deployments"]["staging"]
    assert slot["champion"] == champion and slot["challenger"] is None


async def test_a_retried_request_returns_the_first_result_and_appends_once(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = {**await auth("ci", "pipeline"), "Idempotency-Key": "register-fraud-1"}
    body = {"name": "idem", "risk_tier": "low"}
    first = await client.post("/v1/models", json=body, headers=ci)
    head, _ = await resources.store.head()
    again = await client.post("/v1/models", json=body, headers=ci)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert (await resources.store.head())[0] == head
    other = await client.post("/v1/models", json={**body, "risk_tier": "high"}, headers=ci)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    upload = {**ci, "Idempotency-Key": "version-1"}
    v1 = await register_version(client, upload, "idem")
    v1_again = await register_version(client, upload, "idem")
    assert v1.status_code == v1_again.status_code == 201
    assert v1_again.json() == v1.json()
    assert len((await client.get("/v1/models/idem/versions", headers=ci)).json()["versions"]) == 1


async def test_nul_characters_are_refused_before_anything_is_recorded(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    head, _ = await resources.store.head()
    body = b'{"name": "nul", "risk_tier": "low", "description": "a\\u0000b"}'
    refused = await client.post(
        "/v1/models", content=body, headers={**ci, "Content-Type": "application/json"}
    )
    assert refused.status_code == 422
    path = await client.get("/v1/models/a%00b", headers=ci)
    assert path.status_code == 422
    assert (await resources.store.head())[0] == head
    # the log and its views keep working
    assert (await create_model(client, ci, "after-nul")).status_code == 201


async def test_an_approval_states_its_evidence_and_says_why_it_lapsed(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    number = await ready_version(client, resources, ci, "early", tier="high")
    url = f"/v1/models/early/versions/{number}/approvals"
    early = await client.post(
        url, json={"decision": "approve"}, headers=await auth("approver", "bob")
    )
    assert early.status_code == 201, early.text
    given = early.json()
    version = (await client.get(f"/v1/models/early/versions/{number}", headers=ci)).json()
    assert given["binds_to"] == {
        "artifact_sha256": version["artifact_sha256"],
        "library_sha256": version["compiled"]["library_sha256"],
        "report_sha256s": [],
    }
    assert len(given["warnings"]) == 1 and given["warnings"][0].startswith("compliance: ")
    assert version["approvals"][0]["counts"] and version["approvals"][0]["reason"] is None

    await record_compliance(resources, "early", number, passed=True)
    version = (await client.get(f"/v1/models/early/versions/{number}", headers=ci)).json()
    lapsed = "evidence_changed: compliance report cccccccccccc added after approval"
    assert version["approvals"][0]["counts"] is False
    assert version["approvals"][0]["reason"] == lapsed
    plan = await client.post(
        "/v1/models/early/promotions",
        json={"version": number, "environment": "production", "dry_run": True},
        headers=ci,
    )
    detail = next(g["detail"] for g in plan.json()["gates"] if g["name"] == "approvals")
    assert detail == f"0 of 2 required approvals (high risk); lapsed: bob ({lapsed})"

    # an approval given now binds the report and warns of nothing; a rejection binds nothing
    again = await client.post(
        url, json={"decision": "approve"}, headers=await auth("approver", "carol")
    )
    assert again.json()["binds_to"]["report_sha256s"] == ["c" * 64]
    assert again.json()["warnings"] == []
    rejected = await client.post(
        url, json={"decision": "reject"}, headers=await auth("approver", "dave")
    )
    assert rejected.json()["binds_to"] is None and rejected.json()["warnings"] == []
