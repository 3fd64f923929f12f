"""A/B experiments end to end: started over HTTP, units routed by hash and logged with each
prediction, rewards fed back, the update job's look, and its conclusions."""

from __future__ import annotations

import math
import uuid
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import add_version, promote, score
from tests.workers.jobs_helpers import run_worker
from workers.jobs.schedule import schedule_experiment_looks

pytestmark = pytest.mark.processes
ROW = {"rows": [[0.1, 0.2, 0.3, 1.0]]}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True)


def experiment(**changes: Any) -> dict[str, Any]:
    body = {
        "environment": "staging",
        "champion": 1,
        "challenger": 2,
        "traffic_percent": 50,
        "metric": {"name": "conversion", "kind": "binary"},
        "guardrails": {"max_error_rate": 0.01, "max_p99_latency_ms": 1000},
        "minimum_detectable_effect": 0.1,
        "horizon_per_arm": 10_000,
        "min_samples_per_arm": 20,
    }
    return body | changes


async def _two_versions(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> tuple[dict[str, str], dict[str, str]]:
    """Model "fraud", versions 1 and 2 with real libraries, 1 champion in staging."""
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    for kind in ("seed0", "seed1"):
        await add_version(client, ci, resources, "fraud", kind)
    await promote(client, ci, "fraud", 1)
    return ci, await auth("scorer")


async def _start(client: httpx.AsyncClient, ci: dict[str, str], body: dict[str, Any]) -> str:
    started = await client.post("/v1/models/fraud/experiments", json=body, headers=ci)
    assert started.status_code == 201, started.text
    experiment_id: str = started.json()["experiment_id"]
    return experiment_id


async def _score_units(
    client: httpx.AsyncClient, scorer: dict[str, str], units: list[str]
) -> dict[str, tuple[int, str]]:
    """Each unit scored once: its version and prediction id."""
    served = {}
    for unit in units:
        answered = await score(client, scorer, "fraud", ROW | {"unit_id": unit})
        assert answered.status_code == 200, answered.text
        body = answered.json()
        served[unit] = (body["version"], body["prediction_ids"][0])
    return served


async def _look(
    client: httpx.AsyncClient,
    ci: dict[str, str],
    resources: Resources,
    settings: Settings,
    eid: str,
    *,
    request: bool = True,
) -> dict[str, Any]:
    """Run a look (asked for here unless already requested) and read the experiment."""
    if request:
        job = {"kind": "experiment", "model": "fraud", "params": {"experiment_id": eid}}
        requested = await client.post("/v1/jobs", json=job, headers=ci)
        assert requested.status_code == 202, requested.text
    while await resources.dispatcher.relay() or await resources.redis.zcard(settings.queue_name):
        _, failed = await run_worker(settings)
        assert failed == 0
    await resources.projector.catch_up()
    read = await client.get(f"/v1/models/fraud/experiments/{eid}", headers=ci)
    assert read.status_code == 200, read.text
    body: dict[str, Any] = read.json()
    return body


async def test_units_keep_their_arm_and_a_clear_effect_names_the_winner_unpromoted(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, settings: Settings
) -> None:
    # given: an experiment of 2 against champion 1 at 50%
    ci, scorer = await _two_versions(client, auth, resources)
    eid = await _start(client, ci, experiment())
    units = [f"customer-{i}" for i in range(120)]
    # when: every unit is scored twice
    first = await _score_units(client, scorer, units)
    again = await _score_units(client, scorer, units)
    # then: the same unit always got the same arm, and both arms served (50% +- 5 sigma)
    assert {u: v for u, (v, _) in first.items()} == {u: v for u, (v, _) in again.items()}
    challengers = sum(version == 2 for version, _ in first.values())
    assert 30 <= challengers <= 90
    # and each prediction is logged with its unit, the experiment and its latency
    await resources.scoring.predictions.flush()
    logged = await resources.pool.fetch(
        "SELECT unit_id, experiment_id, latency_us FROM predictions WHERE experiment_id = $1", eid
    )
    assert len(logged) == 240 and {r["unit_id"] for r in logged} == set(units)
    assert all(r["latency_us"] > 0 for r in logged)

    # when: the challenger's units convert 80%, the champion's 20%, and a look is taken
    rewards = {1: [], 2: []}  # type: dict[int, list[float]]
    for index, (version, prediction) in enumerate(first.values()):
        reward = float(index % 5 != 0) if version == 2 else float(index % 5 == 0)
        rewards[version].append(reward)
        fed = await client.post(
            "/v1/feedback", json={"prediction_id": prediction, "reward": reward}, headers=scorer
        )
        assert fed.status_code == 202, fed.text
    read = await _look(client, ci, resources, settings, eid)
    # then: the statistics are those of the rewards, and version 2 is the winner
    latest = read["latest"]
    mean = {v: sum(r) / len(r) for v, r in rewards.items()}
    assert latest["champion"]["outcomes"] == len(rewards[1])
    assert latest["challenger"]["predictions"] == 2 * len(rewards[2])
    assert latest["effect"] == pytest.approx(mean[2] - mean[1])
    assert latest["ci_low"] > 0 and latest["p_value"] <= 0.05
    assert [g["passed"] for g in latest["guardrails"]] == [True, True]
    assert read["status"] == "winner"
    assert (
        read["conclusion"]["winner"] == 2 and "wins on conversion" in read["conclusion"]["reason"]
    )
    # and nothing was promoted: 2 still runs as the canary, promotion is the gates' decision
    slot = (await client.get("/v1/models/fraud", headers=ci)).json()["deployments"]["staging"]
    assert (slot["champion"], slot["challenger"], slot["strategy"]) == (1, 2, "canary")
    listed = (await client.get("/v1/models/fraud/experiments", headers=scorer)).json()
    assert [e["experiment_id"] for e in listed["experiments"]] == [eid]
    # and the job says what the look found
    job_id = await resources.pool.fetchval(
        "SELECT job_id FROM jobs WHERE kind = 'experiment' ORDER BY requested_position DESC"
    )
    status = (await client.get(f"/v1/jobs/{job_id}", headers=ci)).json()
    assert status["status"] == "succeeded", status
    assert (status["result"]["outcome"], status["result"]["winner"]) == ("winner", 2)
    assert status["result"]["p_value"] == latest["p_value"]
    # and a concluded experiment takes no more looks, asked for or scheduled
    job = {"kind": "experiment", "model": "fraud", "params": {"experiment_id": eid}}
    assert (await client.post("/v1/jobs", json=job, headers=ci)).status_code == 409
    assert await schedule_experiment_looks(resources) == 0


async def test_a_guardrail_breach_ends_the_challenger_caused_by_the_conclusion(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, settings: Settings
) -> None:
    # given: an experiment whose latency guardrail no request can meet (0 ms)
    ci, scorer = await _two_versions(client, auth, resources)
    body = experiment(guardrails={"max_p99_latency_ms": 0}, min_samples_per_arm=5)
    eid = await _start(client, ci, body)
    await _score_units(client, scorer, [f"u{i}" for i in range(60)])
    await resources.scoring.predictions.flush()
    # when: the schedule asks for a look at the running experiment, and it is taken
    assert await schedule_experiment_looks(resources) == 1
    read = await _look(client, ci, resources, settings, eid, request=False)
    # then: the experiment ended on the guardrail, and the challenger was ended after it
    assert read["status"] == "guardrail_breach"
    assert "p99_latency_ms" in read["conclusion"]["reason"]
    recorded = await resources.store.read_stream(model_stream("fraud"))
    ended = next(r for r in recorded if isinstance(r.event, ev.ExperimentEnded))
    demotion = next(
        r
        for r in recorded
        if isinstance(r.event, ev.DeploymentChanged) and r.event.action == "demotion"
    )
    assert isinstance(demotion.event, ev.DeploymentChanged) and demotion.event.version == 2
    assert demotion.position > ended.position
    assert demotion.meta.causation_id == str(ended.event_id)
    # on behalf of whoever asked for the look: here, the schedule
    assert demotion.meta.actor == ended.meta.actor == "system:experiment-schedule"
    await resources.scoring.scorer.refresh()
    served = await _score_units(client, scorer, [f"u{i}" for i in range(20)])
    assert {version for version, _ in served.values()} == {1}


async def test_bad_experiments_are_problems_and_append_nothing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, _ = await _two_versions(client, auth, resources)
    head, _ = await resources.store.head()
    for body, status in (
        (experiment(traffic_percent=0), 422),
        (experiment(minimum_detectable_effect=2), 422),
        (experiment(metric={"name": "loss", "kind": "continuous"}, horizon_per_arm=None), 422),
        (experiment(metric={"name": "x", "kind": "ordinal"}), 400),
        (experiment(champion=2, challenger=1), 409),
        (experiment(environment="production"), 409),
        (experiment(unknown=1), 400),
    ):
        answered = await client.post("/v1/models/fraud/experiments", json=body, headers=ci)
        assert answered.status_code == status, (body, answered.text)
        assert answered.headers["content-type"].startswith("application/problem+json")
    assert (await resources.store.head())[0] == head
    missing = await client.get(f"/v1/models/fraud/experiments/{uuid.uuid4()}", headers=ci)
    assert missing.status_code == 404
    # a retried start with the same Idempotency-Key answers the first experiment again
    retried = {**ci, "Idempotency-Key": "start-1"}
    first = await client.post("/v1/models/fraud/experiments", json=experiment(), headers=retried)
    again = await client.post("/v1/models/fraud/experiments", json=experiment(), headers=retried)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json()["experiment_id"] == again.json()["experiment_id"]


async def test_a_continuous_metric_takes_any_finite_reward_and_late_rewards_count_once(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, settings: Settings
) -> None:
    # given: an experiment on revenue per scored customer (any finite value, refunds negative)
    ci, scorer = await _two_versions(client, auth, resources)
    metric = {"name": "revenue", "kind": "continuous"}
    eid = await _start(client, ci, experiment(metric=metric, minimum_detectable_effect=50.0))
    served = await _score_units(client, scorer, [f"c{i}" for i in range(80)])
    await resources.scoring.predictions.flush()
    rng = np.random.default_rng(5)
    rewards: dict[str, tuple[int, float]] = {}
    for version, prediction in served.values():
        value = float(np.round(rng.normal(1_000.0 if version == 1 else 1_030.0, 60.0), 2))
        rewards[prediction] = (version, value if rng.random() > 0.1 else -25.5)

    async def feed(predictions: list[str]) -> None:
        for prediction in predictions:
            fed = await client.post(
                "/v1/feedback",
                json={"prediction_id": prediction, "reward": rewards[prediction][1]},
                headers=scorer,
            )
            assert fed.status_code == 202, fed.text

    # when: half the rewards come, a look is taken, then the rest (late, for predictions
    # scored before that look) and a second look
    ids = list(rewards)
    await feed(ids[:40])
    first = (await _look(client, ci, resources, settings, eid))["latest"]
    await feed(ids[40:])
    read = await _look(client, ci, resources, settings, eid)
    latest = read["latest"]
    # then: each reward counted once; the moments are numpy's, the effect and always-valid
    # p-value the mSPRT's by hand (Johari et al.: Lambda = sqrt(V/(V+t2)) e^(t2 d^2/(2V(V+t2))))
    by_arm = {v: np.array([r for a, r in rewards.values() if a == v]) for v in (1, 2)}
    for arm, version in (("champion", 1), ("challenger", 2)):
        assert latest[arm]["outcomes"] == by_arm[version].size
        assert latest[arm]["mean"] == pytest.approx(by_arm[version].mean(), rel=1e-12)
        assert latest[arm]["variance"] == pytest.approx(by_arm[version].var(ddof=1), rel=1e-9)
    effect = by_arm[2].mean() - by_arm[1].mean()
    variance = sum(by_arm[v].var(ddof=1) / by_arm[v].size for v in (1, 2))
    tau2 = 50.0**2
    ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
        tau2 * effect**2 / (2 * variance * (variance + tau2))
    )
    assert latest["effect"] == pytest.approx(effect, rel=1e-9)
    assert latest["p_value"] == pytest.approx(min(first["p_value"], 1.0, 1 / ratio), rel=1e-9)
    # and the second look carried the first look's totals (it read only what came since)
    recorded = await resources.store.read_stream(model_stream("fraud"))
    looks = [r.event for r in recorded if isinstance(r.event, ev.ExperimentUpdated)]
    assert len(looks) == 2 and all(e.totals is not None for e in looks)
    assert looks[0].totals is not None and looks[1].totals is not None
    assert looks[1].totals.watermark >= looks[0].totals.watermark > 0
    # and the second look's job first merged the prediction totals the first look counted
    merged = await resources.pool.fetchval(
        "SELECT count(*) FROM prediction_totals WHERE experiment_id = $1 AND counted_by = $2",
        eid,
        looks[0].totals.horizon,
    )
    assert merged > 0
    # but a reward off [0, 1] for a prediction outside an experiment is still refused
    plain = await score(client, scorer, "fraud", ROW)
    off = await client.post(
        "/v1/feedback",
        json={"prediction_id": plain.json()["prediction_ids"][0], "reward": 250.0},
        headers=scorer,
    )
    assert off.status_code == 422 and "A/B experiment" in off.text, off.text
    for bad in ("Infinity", "NaN"):
        refused = await client.post(
            "/v1/feedback",
            content=f'{{"prediction_id": "{ids[0]}", "reward": {bad}}}',
            headers=scorer | {"Content-Type": "application/json"},
        )
        assert refused.status_code in (400, 422), refused.text


async def test_a_fairness_gap_in_the_challengers_rows_stops_it_caused_by_the_conclusion(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, settings: Settings
) -> None:
    # given: an experiment whose challenger must not favour one merchant group by > 10 points
    ci, _ = await _two_versions(client, auth, resources)
    fairness = {"feature": "merchant", "max_difference": 0.1, "min_group_size": 20}
    unknown = experiment(guardrails={"fairness": fairness | {"feature": "sex"}})
    refused = await client.post("/v1/models/fraud/experiments", json=unknown, headers=ci)
    assert refused.status_code == 422 and "sex" in refused.text, refused.text
    eid = await _start(client, ci, experiment(guardrails={"fairness": fairness}))
    read = await client.get(f"/v1/models/fraud/experiments/{eid}", headers=ci)
    assert read.json()["guardrails"]["fairness"]["metric"] == "demographic_parity"
    # and logged rows where the challenger flags merchant 1 at 0.9 and merchant 2 at 0.1
    rows = [
        (2, 1.0, 0.9), (2, 2.0, 0.1), (1, 1.0, 0.5), (1, 2.0, 0.5),
    ] * 30  # fmt: skip
    await resources.pool.execute(
        "INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, "
        "arm, score, features, created_at, experiment_id, latency_us) "
        "SELECT gen_random_uuid(), 'fraud', 'staging', v, 'lib', "
        "CASE WHEN v = 1 THEN 'champion' ELSE 'challenger' END, to_json(s), "
        "json_build_array(10.0, 30, 12, m), now(), $4, 100.0 "
        "FROM unnest($1::int[], $2::float8[], $3::float8[]) AS t(v, m, s)",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        eid,
    )
    # when: a look is taken
    read = await _look(client, ci, resources, settings, eid)
    # then: the gap (1.0: 100% against 0%) breached the guardrail, and the challenger ended
    check = read["latest"]["guardrails"][-1]
    assert (check["name"], check["value"], check["passed"]) == (
        "demographic_parity_difference(merchant)",
        1.0,
        False,
    )
    assert read["status"] == "guardrail_breach"
    assert "demographic_parity_difference(merchant) 1 > 0.1" in read["conclusion"]["reason"]
    recorded = await resources.store.read_stream(model_stream("fraud"))
    ended = next(r for r in recorded if isinstance(r.event, ev.ExperimentEnded))
    demotion = next(
        r
        for r in recorded
        if isinstance(r.event, ev.DeploymentChanged) and r.event.action == "demotion"
    )
    assert isinstance(demotion.event, ev.DeploymentChanged) and demotion.event.version == 2
    assert demotion.meta.causation_id == str(ended.event_id)
    assert demotion.position > ended.position
