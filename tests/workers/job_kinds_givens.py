"""Given builders for the job kinds' story: what a test starts from, made over HTTP and run by
real arq burst workers; and the rows the scorer and feedback would have written."""

from __future__ import annotations

import io
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, record_compiled, register_version
from tests.workers.jobs_helpers import run_worker
from workers.ml import demo_data, tabular

ROWS = 4_000

# the columns given rows fill, as the scorer's log writes a prediction outside experiments
LOGGED = (
    "prediction_id",
    "name",
    "environment",
    "version",
    "library_sha256",
    "arm",
    "score",
    "features",
    "created_at",
)


@dataclass(frozen=True)
class Ledger:
    """The ledger a story runs on, and a CI token's headers."""

    settings: Settings
    client: httpx.AsyncClient
    ci: dict[str, str]
    resources: Resources
    auth: TokenFactory

    async def job(self, **body: Any) -> str:
        """POST /v1/jobs for the model `fraud`; the job's id."""
        requested = await self.client.post(
            "/v1/jobs", json={"model": "fraud", **body}, headers=self.ci
        )
        assert requested.status_code == 202, requested.text
        job_id: str = requested.json()["job_id"]
        return job_id

    async def run(self) -> None:
        """Run every job requested so far, and those they request (train → compile)."""
        queue = self.settings.queue_name
        while await self.resources.dispatcher.relay() or await self.resources.redis.zcard(queue):
            _, failed = await run_worker(self.settings)
            assert failed == 0

    async def events(self, kind: type[ev.Event]) -> list[Any]:
        """The recorded events of `kind` in the model's stream, in order."""
        recorded = await self.resources.store.read_stream(model_stream("fraud"))
        return [r for r in recorded if isinstance(r.event, kind)]

    async def promote(self, *changes: dict[str, Any]) -> None:
        for change in changes:
            promoted = await self.client.post(
                "/v1/models/fraud/promotions", json=change, headers=self.ci
            )
            assert promoted.status_code == 201, promoted.text

    async def upload(self, shift: float = 0.0) -> str:
        """A window of the demo transactions, uploaded as a dataset; its digest."""
        table = demo_data.fraud_transactions(ROWS, seed=11, shift=shift)
        data = demo_data.parquet_bytes(table)
        files = {"file": ("window.parquet", io.BytesIO(data), "application/octet-stream")}
        uploaded = await self.client.post("/v1/datasets", files=files, headers=self.ci)
        assert uploaded.status_code == 201, uploaded.text
        digest: str = uploaded.json()["sha256"]
        return digest


async def given_a_model_and_its_training_data(ledger: Ledger) -> str:
    """The model `fraud`, age band a sensitive feature; the dataset's digest."""
    model = {"name": "fraud", "risk_tier": "low", "sensitive_features": ["age_band"]}
    created = await ledger.client.post("/v1/models", json=model, headers=ledger.ci)
    assert created.status_code == 201
    return await ledger.upload()


def training(dataset: str, seed: int) -> dict[str, Any]:
    """The body of a training job request (age band left out of the features)."""
    params = {"num_trees": 25, "exclude": ["age_band"]}
    body = {"dataset_sha256": dataset, "target": "is_fraud", "seed": seed, "params": params}
    return {"kind": "train", "params": body}


async def given_a_canary_of_version_2_in_staging(ledger: Ledger) -> None:
    """Version 1 the champion in staging, version 2 its canary on 20% of the traffic."""
    await ledger.promote(
        {"version": 1, "environment": "staging"},
        {"version": 2, "environment": "staging", "strategy": "canary", "traffic_percent": 20},
    )


async def given_a_bandit_experiment_in_staging(ledger: Ledger) -> None:
    """Two compiled versions: 1 the champion in staging, 2 in a bandit experiment with it."""
    assert (await create_model(ledger.client, ledger.ci, "fraud")).status_code == 201
    for seed in (0, 1):
        created = await register_version(ledger.client, ledger.ci, "fraud", seed=seed)
        await record_compiled(ledger.resources, "fraud", created.json()["version"])
    await ledger.promote(
        {"version": 1, "environment": "staging"},
        {"version": 2, "environment": "staging", "strategy": "bandit"},
    )


async def given_logged_inputs(
    resources: Resources, version: ev.VersionRegistered, shift: float
) -> None:
    """What the scorer logs for a sample of requests: the model's input row, by position."""
    table = demo_data.fraud_transactions(300, seed=5, shift=shift)
    categories = version.params["categories"]
    matrix = tabular.features_matrix(table, version.feature_names, categories)
    now = datetime.now(UTC)
    rows = [
        (
            uuid.uuid4(),
            "fraud",
            "staging",
            version.version,
            "lib",
            "champion",
            "0.1",
            json.dumps([None if math.isnan(v) else v for v in row]),
            now,
        )
        for row in matrix.tolist()
    ]
    await resources.pool.copy_records_to_table("predictions", records=rows, columns=LOGGED)


async def given_feedback(resources: Resources, version: int, rewards: list[float]) -> None:
    """What the scorer and POST /v1/feedback write: a prediction, then its reward."""
    now = datetime.now(UTC)
    predictions = [
        (uuid.uuid4(), "fraud", "staging", version, "lib", "challenger", "0.5", None, now)
        for _ in rewards
    ]
    await resources.pool.copy_records_to_table("predictions", records=predictions, columns=LOGGED)
    await resources.pool.copy_records_to_table(
        "feedback",
        records=[
            (p[0], "fraud", "staging", version, r, now)
            for p, r in zip(predictions, rewards, strict=True)
        ],
        columns=["prediction_id", "name", "environment", "version", "reward", "recorded_at"],
    )
