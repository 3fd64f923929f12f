"""Data-quality monitoring end to end: a trained version (with its training profile) serves
in staging; sampled inputs with a feature gone missing and another out of its training range
are logged; a scheduled data-quality job on a real worker alerts on both, bound to it."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from tests.conftest import TokenFactory
from tests.workers.job_kinds_givens import (
    LOGGED,
    Ledger,
    given_a_model_and_its_training_data,
    training,
)
from workers.jobs.schedule import schedule_data_quality_checks
from workers.ml import demo_data, tabular

pytestmark = pytest.mark.processes
WINDOW = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, dispatch_jobs=True, job_timeout_seconds=300.0, drift_min_new_rows=WINDOW
    )


async def _logged(resources: Resources, version: ev.VersionRegistered) -> tuple[str, str]:
    """The scorer's sample of inputs, with the first feature missing in 40% of the rows and
    the second 1e9 (far past its training maximum) in 10%; the two features' names."""
    table = demo_data.fraud_transactions(WINDOW, seed=5)
    matrix = tabular.features_matrix(table, version.feature_names, version.params["categories"])
    gone, wild = version.feature_names[0], version.feature_names[1]
    now = datetime.now(UTC)
    records = []
    for index, row in enumerate(matrix.tolist()):
        logged = [None if math.isnan(v) else v for v in row]
        if index % 5 < 2:
            logged[0] = None
        if index % 10 == 0:
            logged[1] = 1e9
        records.append(
            (uuid.uuid4(), "fraud", "staging", version.version, "lib", "champion", "0.1",
             json.dumps(logged), now)
        )  # fmt: skip
    await resources.pool.copy_records_to_table("predictions", records=records, columns=LOGGED)
    return gone, wild


async def test_missing_and_out_of_range_inputs_of_a_serving_version_are_alerted(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ledger = Ledger(settings, client, await auth("ci"), resources, auth)
    dataset = await given_a_model_and_its_training_data(ledger)
    await ledger.job(**training(dataset, 1))
    await ledger.run()
    [registered] = await ledger.events(ev.VersionRegistered)
    version = registered.event
    await ledger.promote({"version": 1, "environment": "staging"})
    gone, wild = await _logged(resources, version)

    assert await schedule_data_quality_checks(resources) == 1
    await ledger.run()
    assert await schedule_data_quality_checks(resources) == 0  # nothing new since

    [checked] = await ledger.events(ev.DataQualityChecked)
    check = checked.event
    assert (check.version, check.environment, check.rows) == (1, "staging", WINDOW)
    assert check.severity == "critical" and check.width_mismatch_rate == 0.0
    assert check.features[gone]["null_rate"] >= 0.4
    assert check.features[wild]["out_of_range_rate"] >= 0.1
    alerts = {
        (a.event.check, a.event.feature): a.event for a in await ledger.events(ev.DataQualityAlert)
    }
    assert alerts[("null_rate", gone)].severity == "critical"
    assert alerts[("out_of_range", wild)].severity == "critical"
    assert all(a.version == 1 and a.environment == "staging" for a in alerts.values())
    assert checked.meta.actor == "system:data-quality-schedule"
