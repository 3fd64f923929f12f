"""The console's pages against the API for one model with a long history.

C1  `GET /ui/models/{name}` (the model page) vs `GET /v1/models/{name}/history` of the same
    model, p50, in-process (the Litestar app through httpx.ASGITransport); goal: <= 2x
C2  `GET /ui/models/{name}/timeline` (every event rendered as HTML) vs the same history call;
    reported, no goal (it renders what the history returns, with causation links)

The model gets N events (default 5,000): registered once, then description changes through the
governance command path, each attributed as a request's would be.

    uv run python -m bench.console [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
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
                    await res.governance.handle(
                        cmd.UpdateModel(name="big", description=f"d{index}"), meta
                    )
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

    rows = (await ui.get("/ui/models/big/timeline")).text.count("<li id=")
    samples = await common.budgeted_latencies(
        {"history": history, "model_page": model_page, "timeline": timeline},
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
        f"{figures['C2_timeline_over_history']}x"
    )
