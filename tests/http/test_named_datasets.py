"""Named datasets and retraining policies over HTTP: each upload under a name is its next
version, recorded as an event; a model's retraining policy names them. Bad input is a
problem-details 4xx that records and stores nothing."""

from __future__ import annotations

import httpx

from app.resources import Resources
from domain.datasets import dataset_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.http.test_audit_views import _stored_files, assert_problem

FIRST = b"amount,age,label\n12.5,31,0\n80.0,45,1\n3.25,22,0\n"
SECOND = FIRST + b"7.0,50,1\n"


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, name: object
) -> httpx.Response:
    files: dict[str, object] = {"file": ("train.csv", data, "text/csv")}
    if name is not None:
        files["name"] = name
    return await client.post("/v1/datasets", files=files, headers=headers)


async def test_each_new_upload_under_a_name_is_its_next_version(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    first = await _upload(client, ci, FIRST, (None, "transactions"))
    assert first.status_code == 201, first.text
    assert (first.json()["name"], first.json()["version"], first.json()["rows"]) == (
        "transactions",
        1,
        3,
    )
    second = (await _upload(client, ci, SECOND, (None, "transactions"))).json()
    assert second["version"] == 2
    # the latest version's file again is that version: nothing new is recorded
    head, _ = await resources.store.head()
    again = (await _upload(client, ci, SECOND, (None, "transactions"))).json()
    assert again["version"] == 2 and again["sha256"] == second["sha256"]
    assert (await resources.store.head())[0] == head
    # without a name: stored by digest, as before, and no version of anything
    plain = (await _upload(client, ci, b"x,y\n1,2\n", None)).json()
    assert plain["name"] is None and plain["version"] is None

    listed = await client.get("/v1/datasets/transactions", headers=await auth("auditor"))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert body["latest"]["sha256"] == second["sha256"]
    assert body["versions"][0]["sha256"] == first.json()["sha256"]
    assert body["latest"]["added_by"] == "pipeline" and body["latest"]["columns"] == [
        "amount",
        "age",
        "label",
    ]
    recorded = await resources.store.read_stream(dataset_stream("transactions"))
    assert [r.meta.actor for r in recorded] == ["pipeline", "pipeline"]


async def test_the_list_names_every_dataset_with_its_latest_version(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci, auditor = await auth("ci"), await auth("auditor")
    empty = await client.get("/v1/datasets", headers=auditor)
    assert empty.status_code == 200 and empty.json() == {"datasets": []}, empty.text
    # given: two versions of one name, one of another, and an upload with no name
    await _upload(client, ci, FIRST, (None, "transactions"))
    latest = (await _upload(client, ci, SECOND, (None, "transactions"))).json()
    other = (await _upload(client, ci, b"a,b\n1,2\n", (None, "applications"))).json()
    await _upload(client, ci, b"x,y\n1,2\n", None)
    # then: the named ones, by name, each with its latest version and its count
    listed = await client.get("/v1/datasets", headers=auditor)
    assert listed.status_code == 200, listed.text
    found = listed.json()["datasets"]
    assert [(d["name"], d["versions"], d["latest"]["sha256"]) for d in found] == [
        ("applications", 1, other["sha256"]),
        ("transactions", 2, latest["sha256"]),
    ]
    assert found[1]["latest"]["version"] == 2


async def test_bad_names_are_422_before_anything_is_stored(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    head, _ = await resources.store.head()
    stored = _stored_files(resources.artifacts.root)
    for name in ((None, "Bad Name"), (None, "../up"), (None, ""), ("n.csv", b"a", "text/csv")):
        assert_problem(await _upload(client, ci, FIRST, name), 422)
    assert (await resources.store.head())[0] == head
    assert _stored_files(resources.artifacts.root) == stored
    assert_problem(await client.get("/v1/datasets/nothing-here", headers=ci), 404)
    assert_problem(await client.get("/v1/datasets/Bad%20Name", headers=ci), 422)


async def test_a_retraining_policy_is_set_read_and_checked(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "fraud", tier="medium")).status_code == 201
    policy = {"dataset": "transactions", "target": "label", "evaluation_dataset": "holdout"}

    put = await client.put("/v1/models/fraud/retraining-policy", json=policy, headers=ci)

    assert put.status_code == 200, put.text
    body = put.json()
    assert body["policy"]["dataset"] == "transactions"
    assert body["policy"]["triggers"] == ["drift", "performance"]
    assert body["policy"]["environments"] == ["production"]
    assert (body["set_by"], body["decisions"]) == ("pipeline", [])
    assert body["position"] > 0
    read = await client.get("/v1/models/fraud/retraining-policy", headers=await auth("scorer"))
    assert read.json()["policy"] == body["policy"]

    head, _ = await resources.store.head()
    for bad, status in (
        ({"dataset": "Bad Name"}, 422),
        ({"dataset": "ok", "triggers": []}, 422),
        ({"dataset": "ok", "triggers": ["weather"]}, 400),
        ({"dataset": "ok", "cooldown_hours": -1}, 422),
        ({"dataset": "ok", "surprise": 1}, 400),
        ({"target": "label"}, 400),
    ):
        response = await client.put("/v1/models/fraud/retraining-policy", json=bad, headers=ci)
        assert_problem(response, status)
    assert (await resources.store.head())[0] == head
    assert_problem(
        await client.put("/v1/models/ghost/retraining-policy", json=policy, headers=ci), 404
    )
    none_set = await create_model(client, ci, "plain")
    assert none_set.status_code == 201
    empty = (await client.get("/v1/models/plain/retraining-policy", headers=ci)).json()
    assert (empty["policy"], empty["position"]) == (None, None)
