"""Commands sent at once on one model all land: the server decided each on the state it read,
so a concurrency conflict with another's append is its own to retry on the fresh state, never
a 409 for a client that sent no If-Match."""

from __future__ import annotations

import asyncio

import httpx

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version

AT_ONCE = 8


async def test_job_requests_sent_at_once_on_one_model_are_all_accepted(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "herd")).status_code == 201
    assert (await register_version(client, ci, "herd")).status_code == 201
    job = {"kind": "compile", "model": "herd", "version": 1}
    answers = await asyncio.gather(
        *(client.post("/v1/jobs", json=job, headers=ci) for _ in range(AT_ONCE))
    )
    assert [a.status_code for a in answers] == [202] * AT_ONCE, [a.text for a in answers]
    job_ids = {a.json()["job_id"] for a in answers}
    assert len(job_ids) == AT_ONCE
    for job_id in job_ids:
        assert (await resources.jobs.view(job_id)).status == "requested"


async def test_versions_registered_at_once_on_one_model_are_numbered_in_turn(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "pipelines")).status_code == 201
    answers = await asyncio.gather(
        *(register_version(client, ci, "pipelines", seed=seed) for seed in range(AT_ONCE))
    )
    assert [a.status_code for a in answers] == [201] * AT_ONCE, [a.text for a in answers]
    assert sorted(a.json()["version"] for a in answers) == list(range(1, AT_ONCE + 1))
