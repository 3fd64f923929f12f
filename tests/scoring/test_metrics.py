"""GET /metrics after scoring: the operators' series exist with their labels and types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.scoring.helpers import deployed, rows_with_missing, score
from workers.metrics import job_metrics

Families = dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]


async def _scrape(client: httpx.AsyncClient) -> Families:
    """Every family by name: its type, and its samples by (sample name, sorted labels)."""
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        family.name: (
            family.type,
            {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(answer.text)
    }


def _value(families: Families, family: str, sample: str, **labels: str) -> float:
    return families[family][1].get((sample, tuple(sorted(labels.items()))), 0.0)


async def test_scoring_leaves_latency_rows_errors_and_route_durations_by_their_labels(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, version = await deployed(client, auth, resources)
    arm = {"model": "fraud", "version": str(version), "environment": "staging", "arm": "champion"}
    before = await _scrape(client)

    assert (await score(client, scorer, "fraud", {"rows": rows_with_missing(1)})).status_code == 200
    assert (await score(client, scorer, "fraud", {"rows": rows_with_missing(5)})).status_code == 200
    # a wrong width (answered by the route after the fast path gave up: counted once)
    assert (await score(client, scorer, "fraud", {"rows": [[1.0]]})).status_code == 422
    assert (await score(client, scorer, "nothing", {"rows": [[1.0]]})).status_code == 404
    await resources.scoring.predictions.flush()
    after = await _scrape(client)

    def grew(family: str, sample: str, **labels: str) -> float:
        return _value(after, family, sample, **labels) - _value(before, family, sample, **labels)

    latency = "model_ledger_score_duration_seconds"
    assert after[latency][0] == "histogram"
    assert grew(latency, f"{latency}_count", **arm) == 2
    assert grew(latency, f"{latency}_bucket", **arm, le="+Inf") == 2
    assert 0 < grew(latency, f"{latency}_sum", **arm) < 1.0
    rows = "model_ledger_scored_rows"
    assert after[rows][0] == "counter"
    assert grew(rows, f"{rows}_total", **arm) == 6
    errors = "model_ledger_score_errors"
    assert after[errors][0] == "counter"
    assert grew(errors, f"{errors}_total", **arm, reason="invalid_input") == 1
    unrouted = {"model": "", "version": "", "environment": "", "arm": ""}
    assert grew(errors, f"{errors}_total", **unrouted, reason="not_deployed") == 1
    logged = "model_ledger_prediction_log_rows"
    assert after[logged][0] == "counter"
    assert grew(logged, f"{logged}_total", arm="champion") == 6
    assert after["model_ledger_prediction_log_dropped_rows"][0] == "counter"

    # per route template, never the raw path (bounded cardinality)
    http = "model_ledger_request_duration_seconds"
    assert after[http][0] == "histogram"
    route = {"app_name": "model_ledger", "method": "POST", "path": "/v1/score/{name}"}
    assert grew(http, f"{http}_count", **route, status_code="200") == 2
    assert grew(http, f"{http}_count", **route, status_code="422") == 1
    # sub-millisecond buckets: a score answers in a fraction of one
    fine = {**route, "status_code": "200", "le": "0.0001"}
    assert (f"{http}_bucket", tuple(sorted(fine.items()))) in after[http][1]
    paths = {dict(key[1]).get("path") for key in after[http][1]}
    assert "/v1/score/fraud" not in paths and "/v1/score/nothing" not in paths


async def test_the_api_reports_jobs_queue_view_lag_and_drift_of_the_cluster(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    _, version = await deployed(client, auth, resources)
    ci = await auth("ci")
    alert = {
        "version": version,
        "statistic": "psi",
        "value": 0.31,
        "threshold": 0.25,
        "severity": "warning",
        "feature": "amount",
        "environment": "staging",
    }
    raised = await client.post("/v1/models/fraud/drift-alerts", json=alert, headers=ci)
    assert raised.status_code == 201, raised.text

    found = await _scrape(client)

    assert found["model_ledger_jobs"][0] == "gauge"
    jobs = {dict(key[1])["kind"]: v for key, v in found["model_ledger_jobs"][1].items()}
    assert jobs["compile"] >= 1  # registering requested a compile
    assert found["model_ledger_job_queue_depth"][0] == "gauge"
    lag = found["model_ledger_projection_lag_events"]
    assert lag[0] == "gauge"
    projections = {dict(key[1])["projection"]: v for key, v in lag[1].items()}
    assert projections and all(v >= 0 for v in projections.values())
    drift = "model_ledger_drift_value"
    assert found[drift][0] == "gauge"
    labels = {
        "model": "fraud",
        "version": str(version),
        "environment": "staging",
        "feature": "amount",
        "statistic": "psi",
    }
    assert _value(found, drift, drift, **labels) == 0.31


_DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/model-ledger.json"
_SERIES = re.compile(r"\bmodel_ledger_[a-z_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


async def test_every_series_the_dashboard_queries_is_one_the_processes_expose(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    assert (await score(client, scorer, "fraud", {"rows": rows_with_missing(1)})).status_code == 200
    job_metrics()  # a worker's series (its own port, or the API's in the embedded stack)
    exposed = {
        family + suffix
        for family, (kind, _) in (await _scrape(client)).items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }
    dashboard = json.loads(_DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in _SERIES.findall(target["expr"])
    }
    queried |= {
        name
        for variable in dashboard["templating"]["list"]
        for name in _SERIES.findall(variable["definition"])
    }
    assert len(queried) >= 12
    assert queried <= exposed, queried - exposed
