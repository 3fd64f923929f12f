"""LightGBM registrations go through the application's warm sandbox, which a crash does not stop."""

from __future__ import annotations

import hashlib
import re

import httpx
import lightgbm
import numpy as np

from app.resources import Resources, open_resources
from app.settings import Settings
from domain import commands as cmd
from domain.events import EventMeta
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
    # a child per library, warm: the same two read the second file
    assert len(warm) == 2 and resources.sandbox.pids() == warm

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
    # both were replaced: LightGBM's crashed, Treelite's was reading a refused file
    assert len(resources.sandbox.pids()) == 2 and not set(resources.sandbox.pids()) & set(warm)


async def test_a_file_that_crashes_treelite_is_422_and_the_server_goes_on(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "categorical")).status_code == 201
    # LightGBM reads it; Treelite segfaults on it, which took the server's process down
    # when Treelite read uploads there
    text = lightgbm_model_bytes(3)
    damaged = re.sub(rb"decision_type=\d+", b"decision_type=1", text, count=1)
    refused = await register_version(client, ci, "categorical", artifact=damaged)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "invalid_input"
    assert "not a LightGBM text model: Treelite crashed reading it" in problem["detail"]
    assert not resources.artifacts.exists(hashlib.sha256(damaged).hexdigest())  # not kept
    accepted = await register_version(client, ci, "categorical", seed=3)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["version"] == 1


async def test_a_zero_as_missing_model_is_422_naming_the_parameter(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "zeros")).status_code == 201
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 4))
    x[x < 0.2] = 0.0
    y = (x[:, 0] + x[:, 1] > 0.5).astype(int)
    params = {"objective": "binary", "verbose": -1, "zero_as_missing": True}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=4)
    refused = await register_version(
        client, ci, "zeros", artifact=booster.model_to_string().encode()
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "invalid_input" and problem["field"] == "artifact"
    assert "zero_as_missing=True" in problem["detail"]
    versions = await client.get("/v1/models/zeros/versions", headers=ci)
    assert versions.json()["versions"] == []


async def test_an_unknown_model_is_404_before_its_upload_is_read_or_stored(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, settings: Settings
) -> None:
    ci = await auth("ci", "pipeline")
    artifact = lightgbm_model_bytes(6)
    missing = await register_version(client, ci, "nowhere", artifact=artifact)
    assert missing.status_code == 404, missing.text
    assert not resources.artifacts.exists(hashlib.sha256(artifact).hexdigest())
    assert resources.sandbox.pids() == []  # nothing was read

    # a model this process never saw (registered by another) is looked up, not assumed absent
    async with open_resources(settings) as other:
        command = cmd.RegisterModel(name="elsewhere", risk_tier="low")
        await other.governance.handle(command, EventMeta(actor="ci", role="ci"))
    assert not resources.governance.knows_model("elsewhere")
    accepted = await register_version(client, ci, "elsewhere", artifact=artifact)
    assert accepted.status_code == 201, accepted.text
    assert resources.governance.knows_model("elsewhere")
