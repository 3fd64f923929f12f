"""Each job kind end to end on the demo data: train → compile → compliance → canary → drift →
the policy's rollback. Requested over HTTP, run by real arq burst workers on real Redis."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from app.resources import Resources, open_resources
from app.settings import Settings
from domain import events as ev
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model
from tests.workers.job_kinds_givens import (
    ROWS,
    Ledger,
    given_a_bandit_experiment_in_staging,
    given_a_canary_of_version_2_in_staging,
    given_a_model_and_its_training_data,
    given_feedback,
    given_logged_inputs,
    training,
)
from tests.workers.jobs_helpers import job_status, stream_types
from workers.jobs.schedule import schedule_drift_checks
from workers.ml import demo_data

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=300.0)


@pytest.fixture
async def ledger(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> Ledger:
    return Ledger(settings, client, await auth("ci"), resources, auth)


async def test_the_job_kinds_tell_the_whole_story(ledger: Ledger) -> None:
    dataset = await given_a_model_and_its_training_data(ledger)

    registered = await _training_registers_two_versions_with_lineage(ledger, dataset)
    await _each_version_is_compiled_once_and_certified(ledger)
    await _compliance_reports_fairness_by_age_band(ledger, dataset)
    await given_a_canary_of_version_2_in_staging(ledger)
    await _drift_on_a_calm_window_reports_nothing(ledger, dataset)
    await _drift_on_a_shifted_window_demotes_the_canary(ledger)
    await _scheduled_drift_checks_read_the_prediction_log(ledger, registered[0])


async def _training_registers_two_versions_with_lineage(
    ledger: Ledger, dataset: str
) -> list[ev.VersionRegistered]:
    # when: two versions trained (their compile jobs run too)
    trained = [await ledger.job(**training(dataset, seed)) for seed in (1, 2)]
    await ledger.run()
    # then: each registered with lineage and a compile request
    for job_id in trained:
        status = await job_status(ledger.client, ledger.ci, ledger.resources, job_id)
        assert status["status"] == "succeeded", status
        assert status["result"]["metrics"]["auc"] > 0.75
    registered = [r.event for r in await ledger.events(ev.VersionRegistered)]
    # the two trainings may run at once: version numbers follow whichever finished first
    assert [v.version for v in registered] == [1, 2]
    assert {v.lineage.training_job for v in registered} == set(trained)
    assert registered[0].lineage.dataset_sha256 == dataset
    assert registered[0].lineage.profile_sha256 is not None
    assert "age_band" not in registered[0].feature_names
    assert "merchant_category" in registered[0].params["categories"]
    return registered


async def _each_version_is_compiled_once_and_certified(ledger: Ledger) -> None:
    # then: certified on the training holdout, NaNs and categories included; the two compile
    # jobs may also run at once: each version compiled once, in either order
    compiled = [r.event for r in await ledger.events(ev.VersionCompiled)]
    assert sorted(c.version for c in compiled) == [1, 2]
    assert all(c.max_abs_diff == 0.0 and c.rows_checked >= ROWS // 5 for c in compiled)


async def _compliance_reports_fairness_by_age_band(ledger: Ledger, dataset: str) -> None:
    # when: version 1's compliance checked
    params = {"dataset_sha256": dataset, "target": "is_fraud"}
    checked_job = await ledger.job(kind="compliance", version=1, params=params)
    await ledger.run()
    # then: fairness by age band, the report stored, its digest in the event
    checked = (await ledger.events(ev.ComplianceChecked))[-1].event
    assert checked.job_id == checked_job and checked.version == 1
    assert "age_band.demographic_parity_difference" in checked.metrics
    stored = ledger.resources.artifacts.path_of(checked.report_sha256).read_bytes()
    report = msgspec.json.decode(stored)
    assert set(report["features"]["age_band"]["groups"]) == set(demo_data.AGE_BANDS)
    assert report["passed"] == checked.passed
    # and an auditor fetches the same report through the API; another version has no such report
    auditor = await ledger.auth("auditor")
    url = f"/v1/models/fraud/versions/1/reports/{checked.report_sha256}"
    fetched = await ledger.client.get(url, headers=auditor)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["kind"] == "compliance" and fetched.json()["report"] == report
    assert fetched.json()["sha256"] == checked.report_sha256
    other = url.replace("/versions/1/", "/versions/2/")
    assert (await ledger.client.get(other, headers=auditor)).status_code == 404
    unknown = f"/v1/models/fraud/versions/1/reports/{'0' * 64}"
    assert (await ledger.client.get(unknown, headers=auditor)).json()["code"] == "not_found"
    scorer = await ledger.auth("scorer")
    assert (await ledger.client.get(url, headers=scorer)).status_code == 403


async def _drift_on_a_calm_window_reports_nothing(ledger: Ledger, dataset: str) -> None:
    # when: drift checked on an unshifted window
    params = {"environment": "staging", "dataset_sha256": dataset}
    calm = await ledger.job(kind="drift", version=1, params=params)
    await ledger.run()
    # then: nothing to report
    status = await job_status(ledger.client, ledger.ci, ledger.resources, calm)
    assert status["result"]["severity"] == "info"


async def _drift_on_a_shifted_window_demotes_the_canary(ledger: Ledger) -> None:
    # when: drift checked on a shifted window served by the canary
    shifted = await ledger.upload(shift=1.0)
    params = {"environment": "staging", "dataset_sha256": shifted}
    storm = await ledger.job(kind="drift", params=params)
    await ledger.run()
    # then: critical, and the canary is demoted because of it
    check = (await ledger.events(ev.DriftChecked))[-1].event
    assert (check.version, check.severity, check.job_id) == (2, "critical", storm)
    alerts = [r for r in await ledger.events(ev.DriftDetected) if r.event.job_id == storm]
    assert alerts and alerts[0].event.severity == "critical"
    # the chi-square statistics and p-values behind the alerts are served with the report
    url = f"/v1/models/fraud/versions/2/reports/{check.report_sha256}"
    fetched = await ledger.client.get(url, headers=await ledger.auth("approver"))
    assert fetched.status_code == 200 and fetched.json()["kind"] == "drift"
    merchant = fetched.json()["report"]["features"]["merchant_category"]
    assert {"chi2", "chi2_pvalue", "cramers_v", "cramers_v_balanced"} <= set(merchant)
    demoted = (await ledger.events(ev.DeploymentChanged))[-1]
    assert demoted.event.action == "demotion" and demoted.event.version == 2
    assert demoted.meta.causation_id == str(alerts[0].event_id)
    model = (await ledger.client.get("/v1/models/fraud", headers=ledger.ci)).json()
    staging = model["deployments"]["staging"]
    assert (staging["champion"], staging["challenger"]) == (1, None)
    types = await stream_types(ledger.resources, "fraud")
    assert types.count("job.succeeded") == 7


async def _scheduled_drift_checks_read_the_prediction_log(
    ledger: Ledger, champion: ev.VersionRegistered
) -> None:
    # given: the champion's sampled inputs in the prediction log
    await given_logged_inputs(ledger.resources, champion, shift=1.0)
    # when: drift checks are scheduled: these are due for one
    scheduled = msgspec.structs.replace(ledger.settings, drift_min_new_rows=100)
    async with open_resources(scheduled) as own:
        assert await schedule_drift_checks(own) == 1
        assert await schedule_drift_checks(own) == 0  # nothing new since that request
    await ledger.run()
    # then: checked on the logged rows, by the schedule
    logged = (await ledger.events(ev.DriftChecked))[-1]
    assert (logged.event.version, logged.event.source) == (1, "predictions")
    assert logged.event.rows == 300 and logged.event.severity == "critical"
    assert logged.meta.actor == "system:drift-schedule"


async def test_the_bandit_job_folds_rewards_into_posteriors_and_concludes(ledger: Ledger) -> None:
    await given_a_bandit_experiment_in_staging(ledger)

    await _a_few_rewards_move_the_posteriors_and_conclude_nothing(ledger)
    await _plenty_of_rewards_conclude_for_the_better_version(ledger)


async def _a_few_rewards_move_the_posteriors_and_conclude_nothing(ledger: Ledger) -> None:
    # given: a few rewards
    await given_feedback(ledger.resources, 1, [1.0, 0.0, 0.0])
    await given_feedback(ledger.resources, 2, [1.0, 1.0, 0.0])
    # when: the bandit job runs
    first = await ledger.job(kind="bandit", params={"environment": "staging"})
    await ledger.run()
    # then: posteriors move, nothing is concluded yet
    status = await job_status(ledger.client, ledger.ci, ledger.resources, first)
    assert status["result"]["concluded"] is False
    update = (await ledger.events(ev.BanditUpdated))[-1].event
    arms = {arm.version: arm for arm in update.arms}
    assert (arms[1].successes, arms[1].failures, arms[2].successes) == (1.0, 2.0, 2.0)
    assert sum(arm.allocation for arm in update.arms) == pytest.approx(1.0)
    assert not await ledger.events(ev.ExperimentConcluded)


async def _plenty_of_rewards_conclude_for_the_better_version(ledger: Ledger) -> None:
    # given: plenty: version 2 (60% reward) clearly beats version 1 (30%)
    await given_feedback(ledger.resources, 1, [1.0] * 90 + [0.0] * 210)
    await given_feedback(ledger.resources, 2, [1.0] * 180 + [0.0] * 120)
    # when: the bandit job runs again
    second = await ledger.job(kind="bandit", params={"environment": "staging"})
    await ledger.run()
    # then: version 2 is named the winner, and the deployment settles on it
    status = await job_status(ledger.client, ledger.ci, ledger.resources, second)
    result = status["result"]
    assert (result["concluded"], result["winner"], result["champion"]) == (True, 2, 2)
    concluded = (await ledger.events(ev.ExperimentConcluded))[-1].event
    assert concluded.winner == 2 and concluded.probability_to_beat > 0.95
    assert concluded.p_value is not None and concluded.p_value < 0.01
    model = (await ledger.client.get("/v1/models/fraud", headers=ledger.ci)).json()
    slot = model["deployments"]["staging"]
    assert (slot["champion"], slot["challenger"], slot["strategy"]) == (2, None, "full")
    assert slot["action"] == "conclusion" and "version 2 won" in slot["reason"]
    await _no_update_concludes_again(ledger)


async def _no_update_concludes_again(ledger: Ledger) -> None:
    # when: more rewards, and bandit jobs asked for again
    await given_feedback(ledger.resources, 2, [1.0] * 50)
    refused = await ledger.client.post(
        "/v1/jobs",
        json={"model": "fraud", "kind": "bandit", "params": {"environment": "staging"}},
        headers=ledger.ci,
    )
    # then: no experiment runs any more, and the one conclusion stays the only one
    assert refused.status_code == 409, refused.text
    assert len(await ledger.events(ev.ExperimentConcluded)) == 1


async def test_a_bandit_job_without_an_experiment_is_refused(ledger: Ledger) -> None:
    assert (await create_model(ledger.client, ledger.ci, "fraud")).status_code == 201

    refused = await ledger.client.post(
        "/v1/jobs", json={"model": "fraud", "kind": "bandit", "params": {}}, headers=ledger.ci
    )

    assert refused.status_code == 409
    assert "no bandit experiment runs in production" in refused.json()["detail"]
