"""A worker's own series: attempts by kind and outcome, served on its metrics port."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.resources import Resources
from app.settings import Settings
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.test_serve import free_port
from tests.workers.jobs_helpers import job_status, run_worker
from workers.main import stop_serving
from workers.metrics import serve_metrics

pytestmark = pytest.mark.processes

_ATTEMPTS = "model_ledger_job_attempts_total"
_SECONDS = "model_ledger_job_duration_seconds_count"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=120.0)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_job_attempt_is_timed_and_counted_by_kind_and_outcome(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    created = await register_version(client, ci, "fraud", seed=3)
    assert created.status_code == 201, created.text
    done = {"kind": "compile", "outcome": "succeeded"}
    before = _sample(_ATTEMPTS, **done), _sample(_SECONDS, **done)

    await resources.dispatcher.relay()
    assert await run_worker(settings) == (1, 0)

    status = await job_status(client, ci, resources, str(created.json()["compile_job_id"]))
    assert status["status"] == "succeeded"
    assert _sample(_ATTEMPTS, **done) == before[0] + 1
    assert _sample(_SECONDS, **done) == before[1] + 1


async def test_the_worker_serves_its_series_on_its_own_port() -> None:
    port = free_port()
    served = serve_metrics("127.0.0.1", port)
    assert served is not None
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop_serving(served[0])
    types = {f.name: f.type for f in text_string_to_metric_families(answer.text)}
    assert types["model_ledger_job_duration_seconds"] == "histogram"
    assert types["model_ledger_job_attempts"] == "counter"
    assert serve_metrics("127.0.0.1", 0) is None  # the default: no port of its own
