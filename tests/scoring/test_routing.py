"""Routing per deployment: canary share, shadow scored off the response path, bandit arms."""

from __future__ import annotations

import random

import httpx
import msgspec
import numpy as np

from app.resources import Resources
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import add_version, as_matrix, built, promote, rows_with_missing, score

DRAWS = 2_000


async def _two_versions(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    strategy: str,
    **extra: float,
) -> dict[str, str]:
    """Model "fraud": version 1 champion in staging, version 2 beside it with `strategy`."""
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    first = await add_version(client, ci, resources, "fraud", "seed0")
    second = await add_version(client, ci, resources, "fraud", "seed1")
    await promote(client, ci, "fraud", first)
    await promote(client, ci, "fraud", second, strategy=strategy, **extra)  # type: ignore[arg-type]
    await resources.scoring.scorer.refresh()
    return await auth("scorer")


async def _versions_chosen(resources: Resources, draws: int = DRAWS) -> dict[int, int]:
    scorer = resources.scoring.scorer
    counts = {1: 0, 2: 0}
    for row in rows_with_missing(draws, seed=9):
        scored = await scorer.score("fraud", "staging", [row], None)
        counts[scored.served.version] += 1
    return counts


async def test_a_canary_gets_its_share_and_every_answer_names_a_real_pair(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer = await _two_versions(client, auth, resources, "canary", traffic_percent=20)
    resources.scoring.scorer.rng = random.Random(11)
    counts = await _versions_chosen(resources)
    # 20% of 2,000: 400, standard deviation ~18; a fixed seed makes this exact, the bound sane
    assert 330 < counts[2] < 470, counts
    pairs = {1: built("seed0").library_sha256, 2: built("seed1").library_sha256}
    arms = {1: "champion", 2: "challenger"}
    seen = set()
    for _ in range(60):
        body = (await score(client, scorer, "fraud", {"rows": [[0.1, 0.2, 0.3, 1.0]]})).json()
        assert body["library_sha256"] == pairs[body["version"]]
        assert body["arm"] == arms[body["version"]]
        seen.add(body["version"])
    assert seen == {1, 2}


async def test_shadow_answers_with_the_champion_and_logs_the_challenger_beside_it(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer = await _two_versions(client, auth, resources, "shadow")
    rows = rows_with_missing(40, seed=2)
    answered = await score(client, scorer, "fraud", {"rows": rows})
    single = await score(client, scorer, "fraud", {"rows": rows[:1]})
    assert {answered.json()["version"], single.json()["version"]} == {1}
    assert answered.json()["arm"] == "champion"
    await resources.scoring.predictions.flush()

    logged = await resources.pool.fetch(
        "SELECT version, arm, score, features FROM predictions ORDER BY prediction_id"
    )
    by_arm: dict[str, list[tuple[float, list[float | None]]]] = {"champion": [], "shadow": []}
    for row in logged:
        assert (row["arm"], row["version"]) in {("champion", 1), ("shadow", 2)}
        features = msgspec.json.decode(row["features"])
        by_arm[row["arm"]].append((msgspec.json.decode(row["score"]), features))
    assert len(by_arm["champion"]) == len(by_arm["shadow"]) == 41
    # the shadow scored the very inputs the champion did, with its own library
    inputs = [features for _, features in by_arm["shadow"]]
    shadow_scores = [s for s, _ in by_arm["shadow"]]
    assert shadow_scores == built("seed1").booster.predict(as_matrix(inputs)).tolist()
    assert sorted(map(str, inputs)) == sorted(map(str, [f for _, f in by_arm["champion"]]))
    assert sorted(map(str, inputs)) == sorted(map(str, [*rows, rows[0]]))


async def test_bandit_draws_from_the_prior_then_follows_the_arms_posteriors(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    await _two_versions(client, auth, resources, "bandit")
    resources.scoring.scorer.rng = random.Random(5)
    prior = await _versions_chosen(resources, 1_000)
    # Beta(1, 1) for both: a fair coin
    assert 420 < prior[2] < 580, prior

    update = ev.BanditUpdated(
        name="fraud",
        environment="staging",
        champion=1,
        arms=[
            ev.BanditArm(version=1, successes=30, failures=170, allocation=0.0, probability_best=0),
            ev.BanditArm(version=2, successes=60, failures=140, allocation=1.0, probability_best=1),
        ],
        probability_to_beat=0.999,
        rewards=400,
    )
    meta = ev.EventMeta(actor="worker:bandit", role="admin")
    await resources.store.append(model_stream("fraud"), [update], meta=meta, expected_version=None)
    await resources.scoring.scorer.refresh()
    route = resources.scoring.scorer.routes()[("fraud", "staging")]
    assert not isinstance(route, str)
    assert route.arms == ((1, 30.0, 170.0), (2, 60.0, 140.0))
    after = await _versions_chosen(resources, 1_000)
    # Beta(61, 141) beats Beta(31, 171) in all but a sliver of draws
    assert after[2] > 990, after
    rng = np.random.default_rng(0)
    assert (rng.beta(61, 141, 100_000) > rng.beta(31, 171, 100_000)).mean() > 0.999
