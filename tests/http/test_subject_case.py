"""Subjects compare case-insensitively over HTTP: `Approver-User` and `approver-user` are one
approver for four-eyes, also against tokens and approvals an older log recorded in mixed case."""

from __future__ import annotations

import httpx

from app.resources import Resources
from app.services.tokens import hash_token
from domain import commands as cmd
from domain import events as ev
from domain.tokens import token_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import record_compliance
from tests.http.test_governance import ready_version


async def _token(client: httpx.AsyncClient, admin: dict[str, str], subject: str, role: str) -> dict:
    created = await client.post(
        "/v1/tokens", json={"subject": subject, "role": role}, headers=admin
    )
    assert created.status_code == 201, created.text
    return {
        "subject": created.json()["subject"],
        "Authorization": f"Bearer {created.json()['token']}",
    }


async def _old_token(resources: Resources, subject: str, role: ev.Role) -> dict[str, str]:
    """A token as a log written before subjects were normalised holds it: in its case."""
    token_id = "0ld" + subject.encode().hex()[:13]
    event = ev.TokenIssued(
        token_id=token_id,
        subject=subject,
        role=role,
        token_sha256=hash_token(resources.minter.token(token_id)),
    )
    meta = ev.EventMeta(actor="admin", role="admin")
    await resources.store.append(token_stream(token_id), [event], meta=meta, expected_version=0)
    return {"Authorization": f"Bearer {resources.minter.token(token_id)}"}


async def test_tokens_are_issued_with_normalised_subjects(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    token = await _token(client, await auth("admin"), "  Approver-User ", "approver")
    assert token["subject"] == "approver-user"


async def test_the_registrant_in_another_case_is_refused_by_four_eyes(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin")
    registrant = await _token(client, admin, "CI-Bot", "ci")
    number = await ready_version(
        client, resources, {"Authorization": registrant["Authorization"]}, "m"
    )
    approver = await _token(client, admin, "ci-bot", "approver")
    refused = await client.post(
        f"/v1/models/m/versions/{number}/approvals",
        json={"decision": "approve"},
        headers={"Authorization": approver["Authorization"]},
    )
    assert refused.status_code == 403 and refused.json()["code"] == "four_eyes"


async def test_one_approver_in_two_cases_is_one_of_the_two_high_risk_needs(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin")
    ci = await auth("ci", "pipeline")
    number = await ready_version(client, resources, ci, "hr", tier="high")
    await record_compliance(resources, "hr", number, passed=True)
    # an approval an older server recorded under the mixed-case subject of an old token
    await resources.governance.handle(
        cmd.DecideVersion(name="hr", version=number, approver="Approver-User", decision="approve"),
        ev.EventMeta(actor="Approver-User", role="approver"),
    )
    url = f"/v1/models/hr/versions/{number}/approvals"
    old = await _old_token(resources, "Approver-User", "approver")
    new = await _token(client, admin, "APPROVER-user", "approver")
    for headers in (old, {"Authorization": new["Authorization"]}):
        again = await client.post(url, json={"decision": "approve"}, headers=headers)
        assert again.status_code == 409 and "already approved" in again.json()["detail"]
    promotion = {"version": number, "environment": "production"}
    plan = await client.post(
        "/v1/models/hr/promotions", json={**promotion, "dry_run": True}, headers=ci
    )
    gates = {g["name"]: g for g in plan.json()["gates"]}
    assert "1 of 2" in gates["approvals"]["detail"] and not plan.json()["allowed"]
    assert (
        await client.post("/v1/models/hr/promotions", json=promotion, headers=ci)
    ).status_code == 409

    other = await _token(client, admin, "Risk-Officer-2", "approver")
    second = await client.post(
        url, json={"decision": "approve"}, headers={"Authorization": other["Authorization"]}
    )
    assert second.status_code == 201 and second.json()["approver"] == "risk-officer-2"
    promoted = await client.post("/v1/models/hr/promotions", json=promotion, headers=ci)
    assert promoted.status_code == 201, promoted.text


async def test_an_old_mixed_case_token_acts_under_its_normalised_subject(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    old = await _old_token(resources, "Risk-Officer", "approver")
    number = await ready_version(client, resources, await auth("ci", "pipeline"), "m")
    decided = await client.post(
        f"/v1/models/m/versions/{number}/approvals", json={"decision": "approve"}, headers=old
    )
    assert decided.status_code == 201 and decided.json()["approver"] == "risk-officer"
    revoked = await client.post(
        f"/v1/models/m/versions/{number}/approvals/revocation",
        json={"reason": "second thoughts"},
        headers=old,
    )
    assert revoked.status_code == 201, revoked.text


async def test_an_approval_recorded_in_another_case_is_withdrawn_by_its_approver(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    number = await ready_version(client, resources, await auth("ci", "pipeline"), "m")
    await resources.governance.handle(
        cmd.DecideVersion(name="m", version=number, approver="Approver-User", decision="approve"),
        ev.EventMeta(actor="Approver-User", role="approver"),
    )
    url = f"/v1/models/m/versions/{number}"
    assert (await client.get(url, headers=await auth("auditor"))).json()["state"] == "approved"
    withdrawn = await client.post(
        f"{url}/approvals/revocation",
        json={"reason": "second thoughts"},
        headers=await auth("approver", "approver-user"),
    )
    assert withdrawn.status_code == 201, withdrawn.text
    assert (await client.get(url, headers=await auth("auditor"))).json()["state"] != "approved"
