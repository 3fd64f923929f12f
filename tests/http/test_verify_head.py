"""GET /v1/audit/verify: the checkpoint chain, the witness file and ?expect_head=."""

from __future__ import annotations

import httpx

from app.resources import Resources
from domain.events import EventMeta, TokenRevoked
from tests.conftest import TokenFactory, superuser

META = EventMeta(actor="tester", role="admin")


async def grow(resources: Resources, count: int) -> None:
    for n in range(count):
        await resources.store.append(
            "s", [TokenRevoked(token_id=f"t{n}", reason="r")], meta=META, expected_version=None
        )
    await resources.checkpointer.sign_head()


async def test_verify_reports_the_pin_and_checks_an_expected_head(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, database_url: str
) -> None:
    auditor = await auth("auditor")
    await grow(resources, 6)
    first = (await client.get("/v1/audit/verify", headers=auditor)).json()
    assert first["ok"] and first["unchecked"] == [] and first["witnessed"] == 1
    pin = first["pin"]
    position, _ = pin.split(":")
    assert int(position) == first["head"]["position"]

    again = await client.get("/v1/audit/verify", params={"expect_head": pin}, headers=auditor)
    assert again.status_code == 200 and again.json()["ok"]
    assert again.json()["expected_head"] == first["head"]

    # the newest events and their checkpoints go; the witness file and the pin both notice
    async with superuser(database_url) as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM events WHERE position > 4")
        await conn.execute("DELETE FROM checkpoints WHERE position > 4")
    witnessed = (await client.get("/v1/audit/verify", headers=auditor)).json()
    assert not witnessed["ok"] and "witnessed" in witnessed["problem"]
    resources.settings.witness_file.unlink()
    alone = (await client.get("/v1/audit/verify", headers=auditor)).json()
    assert alone["ok"] and "no witness" in alone["unchecked"][0]
    pinned = await client.get("/v1/audit/verify", params={"expect_head": pin}, headers=auditor)
    assert not pinned.json()["ok"]
    assert pinned.json()["first_broken_position"] == 5
    assert "shorter than the expected head" in pinned.json()["problem"]


async def test_a_malformed_expected_head_is_a_400(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    auditor = await auth("auditor")
    for bad in ("12", "12:abc", "x:" + "0" * 64, "١٢:" + "0" * 64, "-1:" + "0" * 64):
        response = await client.get(
            "/v1/audit/verify", params={"expect_head": bad}, headers=auditor
        )
        assert response.status_code == 400, bad
        assert response.headers["content-type"].startswith("application/problem+json")
