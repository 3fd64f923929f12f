"""The console's pages against the API for one model with a long history.

C1  `GET /ui/models/{name}` (the model page) vs `GET /v1/models/{name}/history` of the same
    model, p50, in-process (the Litestar app through httpx.ASGITransport); goal: <= 2x
C2  `GET /ui/models/{name}/timeline` (every event rendered as HTML) vs the same history call;
    reported, no goal (it renders what the history returns, with causation links)
C3  `GET /ui/models/{name}/scores` (the score histograms the model page loads after itself,
    binned by PostgreSQL from each arm's newest predictions) vs the same history call; reported

The model gets N events (default 5,000): registered once, then description changes through the
governance command path, each attributed as a request's would be, with one event in 20 a drift
check of 10 features (the page's PSI chart); then v1 serves production as champion beside v2 as
a canary, with 10,000 logged predictions each (the page's score histogram).

    uv run python -m bench.console [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.resources import open_resources
from app.services import tokens
from app.settings import Settings
from bench import common
from domain import commands as cmd
from domain import events as ev
from domain.tokens import IssueToken

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
# one event in this many is a drift check (10 features), spread through the history
_DRIFT_EVERY = 20
_FEATURES = 10
# predictions per arm in the prediction log, inside the score histogram's window
_PREDICTIONS = 10_000
_WORKER = ev.EventMeta(actor="worker:drift", role="admin")


async def _drift_check(res: Any, index: int) -> None:
    """A drift check of version 1, as the drift job records it (its charts' data)."""
    features = {f"f{i}": {"psi": (index % 97) / 200 + i / 100} for i in range(_FEATURES)}
    check = ev.DriftChecked(
        name="big",
        version=1,
        severity="info",
        rows=1000,
        report_sha256="0" * 64,
        source="log",
        environment="production",
        features=features,
    )
    await res.store.append("model-big", [check], meta=_WORKER, expected_version=None)


async def _serving_with_predictions(res: Any) -> None:
    """v1 and v2 registered (as their events; no artifact is read here), v1 champion and v2 a
    canary in production, each with `_PREDICTIONS` logged scores
    (the model page bins them: its score distribution chart)."""
    versions = [
        ev.VersionRegistered(
            name="big",
            version=number,
            artifact_sha256=f"{number:064x}",
            artifact_size=1,
            format="lightgbm",
            feature_names=[f"f{i}" for i in range(_FEATURES)],
        )
        for number in (1, 2)
    ]
    serve = ev.DeploymentChanged(
        name="big",
        environment="production",
        action="promotion",
        version=2,
        champion=1,
        challenger=2,
        strategy="canary",
        traffic_percent=10,
    )
    await res.store.append("model-big", [*versions, serve], meta=_WORKER, expected_version=None)
    await res.projector.catch_up()
    now = res.clock()
    rows = [
        (uuid.uuid4(), "big", "production", arm, "x", "champion", f"{(i % 1000) / 1000}", now)
        for arm in (1, 2)
        for i in range(_PREDICTIONS)
    ]
    await res.pool.copy_records_to_table(
        "predictions",
        records=rows,
        columns=[
            "prediction_id",
            "name",
            "environment",
            "version",
            "library_sha256",
            "arm",
            "score",
            "created_at",
        ],
    )


async def main(events: int, iterations: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"events": events}
    async with (
        common.bench_server() as (server_url, source),
        common.fresh_database(server_url, prefix="ml_console") as url,
    ):
        with tempfile.TemporaryDirectory(prefix="ml-console-") as home:
            settings = Settings(
                home=Path(home),
                database_url=url,
                redis_url=os.environ.get("MODEL_LEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
                checkpoint_interval_seconds=3600,
                dispatch_jobs=False,
            )
            async with open_resources(settings) as res:
                figures["notes"] = await common.machine_notes(res.pool, source)
                meta = ev.EventMeta(actor="bench-ci", role="ci")
                await res.governance.handle(
                    cmd.RegisterModel(name="big", risk_tier="high", description="d0"), meta
                )
                for index in range(1, events):
                    if index % _DRIFT_EVERY == 0:
                        await _drift_check(res, index)
                        continue
                    await res.governance.handle(
                        cmd.UpdateModel(name="big", description=f"d{index}"), meta
                    )
                await _serving_with_predictions(res)
                issued = await tokens.issue(
                    res.store,
                    res.projector,
                    res.minter,
                    IssueToken(subject="bench-auditor", role="auditor"),
                    meta=ev.EventMeta(actor="bench-setup", role="admin"),
                )
                app = create_app(settings, resources=res)
                transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
                async with (
                    common.app_lifespan(app),
                    httpx.AsyncClient(transport=transport, base_url="http://b.test") as api,
                    httpx.AsyncClient(transport=transport, base_url="http://b.test") as ui,
                ):
                    form = await ui.get("/ui/sign-in")
                    token = _CSRF.search(form.text)
                    assert token is not None
                    signed = await ui.post(
                        "/ui/sign-in",
                        data={"csrf_token": token.group(1), "token": issued.token},
                    )
                    assert signed.status_code == 303, signed.text
                    bearer = {"Authorization": f"Bearer {issued.token}"}
                    figures |= await _measure(api, ui, bearer, iterations)
    return figures


async def _measure(
    api: httpx.AsyncClient, ui: httpx.AsyncClient, bearer: dict[str, str], iterations: int
) -> dict[str, Any]:
    async def ok(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url}: HTTP {response.status_code}")

    async def history() -> None:
        await ok(await api.get("/v1/models/big/history", headers=bearer))

    async def model_page() -> None:
        await ok(await ui.get("/ui/models/big"))

    async def timeline() -> None:
        await ok(await ui.get("/ui/models/big/timeline"))

    async def scores() -> None:
        await ok(await ui.get("/ui/models/big/scores"))

    rows = (await ui.get("/ui/models/big/timeline")).text.count("<li id=")
    samples = await common.budgeted_latencies(
        {"history": history, "model_page": model_page, "timeline": timeline, "scores": scores},
        iterations,
        block=5,
        warmup=3,
    )
    p50 = {name: common.median(s) / 1000 for name, s in samples.items()}
    return {
        "timeline_rows": rows,
        "p50_ms": {name: round(v, 2) for name, v in p50.items()},
        "C1_model_page_over_history": round(p50["model_page"] / p50["history"], 2),
        "C2_timeline_over_history": round(p50["timeline"] / p50["history"], 2),
        "C3_scores_over_history": round(p50["scores"] / p50["history"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 events, fewer samples")
    parser.add_argument("--events", type=int, default=5_000)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    events = 500 if args.quick else args.events
    figures = common.run(main(events, 20 if args.quick else 60))
    print(json.dumps({k: v for k, v in figures.items() if k != "notes"}, indent=2))
    goal = figures["C1_model_page_over_history"] <= 2.0
    print(
        f"C1 model page / history p50: {figures['C1_model_page_over_history']}x (goal <= 2x: "
        f"{'met' if goal else 'MISSED'}); C2 timeline / history: "
        f"{figures['C2_timeline_over_history']}x; C3 scores / history: "
        f"{figures['C3_scores_over_history']}x"
    )
