"""Revoking and listing tokens over HTTP: audited, idempotent, never the last admin token,
and a revoked token refused by this process before the revocation is answered."""

from __future__ import annotations

import asyncio

import httpx

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.test_tokens_and_auth import assert_problem


async def _issue(client: httpx.AsyncClient, admin: dict[str, str], subject: str, role: str) -> dict:
    created = await client.post(
        "/v1/tokens", json={"subject": subject, "role": role}, headers=admin
    )
    assert created.status_code == 201, created.text
    body: dict = created.json()
    return body


def bearer(issued: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {issued['token']}"}


async def test_a_revoked_token_is_refused_at_once_and_the_revocation_is_attributed(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin", "Root-Operator")
    issued = await _issue(client, admin, "svc", "auditor")
    assert (await client.get("/v1/events", headers=bearer(issued))).status_code == 200

    revoked = await client.request(
        "DELETE",
        f"/v1/tokens/{issued['token_id']}",
        json={"reason": "left the team"},
        headers=admin,
    )
    assert revoked.status_code == 200, revoked.text
    body = revoked.json()
    assert body["token_id"] == issued["token_id"] and body["subject"] == "svc"
    assert body["reason"] == "left the team" and body["revoked_now"] is True
    assert body["revoked_by"] == "root-operator"  # subjects are normalised at issue
    assert_problem(await client.get("/v1/events", headers=bearer(issued)), 401)

    page = await client.get("/v1/events", params={"type": "token.revoked"}, headers=admin)
    [event] = page.json()["events"]
    assert event["position"] == body["position"]
    assert event["stream"] == f"token-{issued['token_id']}"
    assert event["data"]["reason"] == "left the team"
    assert event["meta"] == {"actor": "root-operator", "role": "admin"}


async def test_revoking_twice_answers_the_first_revocation_and_appends_nothing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin")
    issued = await _issue(client, admin, "svc", "scorer")
    path = f"/v1/tokens/{issued['token_id']}"
    first = await client.delete(path, params={"reason": "rotated"}, headers=admin)
    assert first.status_code == 200 and first.json()["reason"] == "rotated"
    head, _ = await resources.store.head()
    again = await client.delete(path, params={"reason": "rotated twice"}, headers=admin)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "revoked_now": False}
    assert (await resources.store.head())[0] == head


async def test_unknown_tokens_bad_reasons_and_other_roles(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin")
    issued = await _issue(client, admin, "svc", "ci")
    path = f"/v1/tokens/{issued['token_id']}"
    others = {role: await auth(role) for role in ("ci", "approver", "auditor", "scorer")}
    head, _ = await resources.store.head()
    assert_problem(await client.delete("/v1/tokens/0123456789abcdef", headers=admin), 404)
    assert_problem(await client.delete("/v1/tokens/not%20an%20id", headers=admin), 404)
    both = await client.request(
        "DELETE", path, params={"reason": "a"}, json={"reason": "b"}, headers=admin
    )
    assert_problem(both, 400)
    assert_problem(await client.request("DELETE", path, json={"why": "x"}, headers=admin), 400)
    long = await client.delete(path, params={"reason": "x" * 501}, headers=admin)
    assert assert_problem(long, 422)["field"] == "reason"
    for headers in others.values():
        assert_problem(await client.delete(path, headers=headers), 403)
        assert_problem(await client.get("/v1/tokens", headers=headers), 403)
    assert_problem(await client.delete(path), 401)
    assert (await resources.store.head())[0] == head
    assert (await client.get("/v1/models", headers=bearer(issued))).status_code == 200


async def test_the_last_live_admin_token_cannot_be_revoked(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin", "first-admin")
    first = (await client.get("/v1/tokens", headers=admin)).json()["tokens"][0]
    refused = await client.delete(f"/v1/tokens/{first['token_id']}", headers=admin)
    assert assert_problem(refused, 409)["code"] == "last_admin_token"
    second = await _issue(client, admin, "second-admin", "admin")
    assert (
        await client.delete(f"/v1/tokens/{first['token_id']}", headers=admin)
    ).status_code == 200
    assert_problem(await client.get("/v1/tokens", headers=admin), 401)
    last = await client.delete(f"/v1/tokens/{second['token_id']}", headers=bearer(second))
    assert assert_problem(last, 409)["code"] == "last_admin_token"


async def test_two_admins_revoking_each_other_at_once_leave_one(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    root = await auth("admin", "root")
    one = await _issue(client, root, "one", "admin")
    two = await _issue(client, root, "two", "admin")
    root_id = (await client.get("/v1/tokens", headers=root)).json()["tokens"][0]["token_id"]
    revoke_root = await client.delete(f"/v1/tokens/{root_id}", headers=root)
    assert revoke_root.status_code == 200, revoke_root.text
    answers = await asyncio.gather(
        client.delete(f"/v1/tokens/{two['token_id']}", headers=bearer(one)),
        client.delete(f"/v1/tokens/{one['token_id']}", headers=bearer(two)),
    )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    survivors = [
        t
        for t in (one, two)
        if (await client.get("/v1/tokens", headers=bearer(t))).status_code == 200
    ]
    assert len(survivors) == 1


async def test_the_list_shows_ids_subjects_roles_and_revocations_never_secrets(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin", "lister")
    kept = await _issue(client, admin, "Kept-Service", "scorer")
    gone = await _issue(client, admin, "gone-service", "ci")
    await client.delete(f"/v1/tokens/{gone['token_id']}", params={"reason": "gone"}, headers=admin)
    listed = await client.get("/v1/tokens", headers=admin)
    assert listed.status_code == 200
    by_id = {t["token_id"]: t for t in listed.json()["tokens"]}
    assert list(by_id)[-2:] == [kept["token_id"], gone["token_id"]]  # issuing order
    assert by_id[kept["token_id"]]["subject"] == "kept-service"
    assert by_id[kept["token_id"]]["role"] == "scorer"
    assert by_id[kept["token_id"]]["issued_by"] == "lister"
    assert by_id[kept["token_id"]]["revoked_at"] is None
    revoked = by_id[gone["token_id"]]
    assert revoked["revoked_at"] is not None and revoked["revoked_by"] == "lister"
    assert revoked["revoked_reason"] == "gone" and revoked["revoked_position"] > revoked["position"]
    text = listed.text
    assert kept["token"] not in text and gone["token"] not in text and "sha256" not in text
    only = await client.get("/v1/tokens", params={"subject": "KEPT-service"}, headers=admin)
    assert [t["token_id"] for t in only.json()["tokens"]] == [kept["token_id"]]
    cis = await client.get("/v1/tokens", params={"role": "ci"}, headers=admin)
    assert [t["token_id"] for t in cis.json()["tokens"]] == [gone["token_id"]]
    assert_problem(await client.get("/v1/tokens", params={"role": "root"}, headers=admin), 400)


async def test_an_idempotency_key_reused_for_another_revocation_is_refused(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin = await auth("admin")
    first, other = [await _issue(client, admin, subject, "ci") for subject in ("a", "b")]
    keyed = {**admin, "Idempotency-Key": "revoke-1"}
    assert (
        await client.delete(f"/v1/tokens/{first['token_id']}", headers=keyed)
    ).status_code == 200
    head, _ = await resources.store.head()
    again = await client.delete(f"/v1/tokens/{first['token_id']}", headers=keyed)
    assert again.status_code == 200 and again.json()["revoked_now"] is False
    reused = await client.delete(f"/v1/tokens/{other['token_id']}", headers=keyed)
    assert assert_problem(reused, 422)["code"] == "idempotency_key_reused"
    assert (await resources.store.head())[0] == head
