"""Deployment changes as the scorer of the same process sees them: a 201 answers only once
this process routes by it, and an ended challenger (or a rollback while one runs) takes no
more traffic."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx

from app.resources import Resources
from domain import commands as cmd
from domain import events as ev
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import add_version, promote, score

ROW = {"rows": [[0.1, 0.2, 0.3, 1.0]]}


async def _three_versions(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> tuple[dict[str, str], dict[str, str]]:
    """Model "fraud" with versions 1-3 and version 1 champion in staging; ci and scorer."""
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    for kind in ("seed0", "seed1", "seed2"):
        await add_version(client, ci, resources, "fraud", kind)
    await promote(client, ci, "fraud", 1)
    return ci, await auth("scorer")


async def _versions_scored(
    client: httpx.AsyncClient, scorer: dict[str, str], count: int
) -> set[int]:
    seen = set()
    for _ in range(count):
        answered = await score(client, scorer, "fraud", ROW)
        assert answered.status_code == 200, answered.text
        seen.add(answered.json()["version"])
    return seen


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    answered = await client.post(f"/v1/models/fraud/{path}", json=body, headers=headers)
    assert answered.status_code == 201, answered.text
    result: dict[str, Any] = answered.json()
    return result


async def test_the_next_score_after_a_201_is_routed_by_the_new_deployment(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, scorer = await _three_versions(client, auth, resources)
    # each change is followed at once by one score: no waiting for the background follower
    for version, other in ((2, 3), (3, 1), (1, 2), (3, 2), (2, 1), (1, 3)):
        await _post(client, ci, "promotions", {"version": version, "environment": "staging"})
        answered = await score(client, scorer, "fraud", ROW)
        assert answered.json()["version"] == version
        # a stale route would send 99% of requests to the canary
        canary = {"version": other, "environment": "staging", "strategy": "canary"}
        await _post(client, ci, "promotions", canary | {"traffic_percent": 99})
        await _post(client, ci, "rollbacks", {"environment": "staging", "reason": "stop"})
        answered = await score(client, scorer, "fraud", ROW)
        assert answered.json()["version"] == version


async def test_ending_a_canary_stops_its_traffic_at_once_and_is_audited(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, scorer = await _three_versions(client, auth, resources)
    resources.scoring.scorer.rng = random.Random(3)
    canary = {"version": 2, "environment": "staging", "strategy": "canary", "traffic_percent": 50}
    await _post(client, ci, "promotions", canary)
    assert await _versions_scored(client, scorer, 40) == {1, 2}
    end = {"action": "end_challenger", "environment": "staging", "reason": "error rate up"}

    # a dry run shows what runs and records nothing
    plan = await client.post(
        "/v1/models/fraud/deployment-changes",
        json={"changes": [end], "dry_run": True},
        headers=ci,
    )
    assert plan.status_code == 200, plan.text
    assert plan.json()["allowed"] is True
    assert "version 2 runs as canary challenger at 50%" in plan.json()["gates"][0]["detail"]

    ended = await _post(client, ci, "deployment-changes", {"changes": [end]})

    assert ended["deployments"][0] | {"position": 0} == {
        "environment": "staging",
        "action": "demotion",
        "version": 2,
        "champion": 1,
        "challenger": None,
        "strategy": "full",
        "traffic_percent": None,
        "policy_version": 0,
        "gates": [],
        "position": 0,
        "reason": "error rate up",
    }
    assert await _versions_scored(client, scorer, 60) == {1}
    model = (await client.get("/v1/models/fraud", headers=ci)).json()
    slot = model["deployments"]["staging"]
    assert (slot["champion"], slot["challenger"], slot["strategy"]) == (1, None, "full")
    assert (slot["action"], slot["reason"]) == ("demotion", "error rate up")
    auditor = await auth("auditor", "auditor-ann")
    history = await client.get(
        "/v1/models/fraud/history", params={"type": "deployment.changed"}, headers=auditor
    )
    last = history.json()["events"][-1]
    assert last["data"]["action"] == "demotion" and last["data"]["reason"] == "error rate up"
    assert last["meta"]["role"] == "ci" and last["meta"]["actor"]

    # nothing runs beside the champion any more: ending again is a conflict naming why
    again = await client.post(
        "/v1/models/fraud/deployment-changes", json={"changes": [end]}, headers=ci
    )
    assert again.status_code == 409
    assert again.json()["unmet_gates"][0]["name"] == "challenger_running"


async def test_ending_a_challenger_is_checked(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, _ = await _three_versions(client, auth, resources)
    await promote(client, ci, "fraud", 2, strategy="shadow")
    bodies = [
        {"action": "end_challenger", "environment": "staging"},  # no reason
        {"action": "end_challenger", "environment": "staging", "reason": "x", "version": 2},
        {"action": "end_challenger", "environment": "staging", "reason": "x", "strategy": "canary"},
        {"action": "promote", "environment": "staging"},  # no version
        {"action": "promote", "environment": "staging", "version": 3, "reason": "x"},
    ]
    for body in bodies:
        refused = await client.post(
            "/v1/models/fraud/deployment-changes", json={"changes": [body]}, headers=ci
        )
        assert refused.status_code == 422, (body, refused.text)
    model = (await client.get("/v1/models/fraud", headers=ci)).json()
    assert model["deployments"]["staging"]["challenger"] == 2  # nothing was written


async def test_a_rollback_while_a_canary_runs_is_the_emergency_stop(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    # given: champion 1 (its only champion ever) and canary 2 at 20%
    ci, scorer = await _three_versions(client, auth, resources)
    resources.scoring.scorer.rng = random.Random(4)
    canary = {"version": 2, "environment": "staging", "strategy": "canary", "traffic_percent": 20}
    await _post(client, ci, "promotions", canary)
    assert 2 in await _versions_scored(client, scorer, 60)
    # when: one call
    stopped = await _post(client, ci, "rollbacks", {"environment": "staging", "reason": "stop"})
    # then: the challenger is gone, the champion serves everything, from the next request
    assert (stopped["action"], stopped["version"], stopped["champion"]) == ("rollback", 2, 1)
    assert stopped["challenger"] is None and stopped["reason"] == "stop"
    assert await _versions_scored(client, scorer, 60) == {1}


async def test_a_concluded_bandit_serves_its_winner_alone_as_the_view_says(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    # given: a bandit experiment of 2 beside champion 1
    ci, scorer = await _three_versions(client, auth, resources)
    resources.scoring.scorer.rng = random.Random(5)
    await _post(
        client, ci, "promotions", {"version": 2, "environment": "staging", "strategy": "bandit"}
    )
    assert await _versions_scored(client, scorer, 40) == {1, 2}
    # when: a bandit job's outcome concludes for 2
    job = ev.JobRequested(job_id=str(uuid.uuid4()), kind="bandit", name="fraud")
    arms = [
        ev.BanditArm(version=1, successes=30, failures=170, allocation=0.0, probability_best=0.0),
        ev.BanditArm(version=2, successes=60, failures=140, allocation=1.0, probability_best=1.0),
    ]
    update = ev.BanditUpdated(
        name="fraud", environment="staging", champion=1, arms=arms, probability_to_beat=0.999
    )
    conclusion = ev.ExperimentConcluded(
        name="fraud", environment="staging", champion=1, winner=2, probability_to_beat=0.999
    )
    outcome = cmd.BanditReported(update=update, conclusion=conclusion)
    await resources.governance.handle(
        cmd.RecordJobOutcome(job=job, attempt=1, seconds=0.1, outcome=outcome),
        ev.EventMeta(actor="worker:bandit", role="admin"),
    )
    # then: the view and the scorer agree: version 2 alone
    slot = (await client.get("/v1/models/fraud", headers=ci)).json()["deployments"]["staging"]
    assert (slot["champion"], slot["challenger"], slot["strategy"]) == (2, None, "full")
    assert slot["action"] == "conclusion"
    assert await _versions_scored(client, scorer, 60) == {2}
