"""LightGBM registrations go through the application's warm sandbox, which a crash does not stop."""

from __future__ import annotations

import httpx

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, lightgbm_model_bytes, register_version


async def test_a_crashing_file_is_422_and_the_next_registers(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "warm")).status_code == 201
    assert (await register_version(client, ci, "warm", seed=1)).status_code == 201
    warm = resources.sandbox.pids()
    assert (await register_version(client, ci, "warm", seed=2)).status_code == 201
    assert len(warm) == 1 and resources.sandbox.pids() == warm

    # printable damage that passes the cheap checks: LightGBM aborts in the sandbox's child
    damaged = lightgbm_model_bytes(3).replace(b"Tree=1", b"Tree-1", 1)
    refused = await register_version(client, ci, "warm", artifact=damaged)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "invalid_input"
    assert "not a LightGBM text model: LightGBM crashed reading it" in problem["detail"]

    accepted = await register_version(client, ci, "warm", seed=4)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["version"] == 3
    assert len(resources.sandbox.pids()) == 1 and resources.sandbox.pids() != warm
