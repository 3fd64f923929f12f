"""What authentication costs on the score path: `authenticate()` alone (a token's first use,
then in a loop), and `POST /v1/score` through the whole ASGI stack (no HTTP client or
socket), at concurrency 1.

Both are timed for `--seconds` (default 12: longer than any cache lifetime, so a cache that
expires and asks the database shows in the tail), against the same run's `GET /health`
through the same stack, and with `--tokens` distinct scorer tokens used in turn (a cache per
token expires per token).

    uv run python -m bench.auth [--seconds 12] [--tokens 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from bench import common
from domain.events import EventMeta
from domain.tokens import IssueToken


async def _asgi(
    app: Any, method: str, path: str, query: bytes, headers: list[Any], body: bytes
) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_us": round(common.percentile(samples, 50), 2),
        "p99_us": round(common.percentile(samples, 99), 2),
        "p99.99_us": round(common.percentile(samples, 99.99), 2),
        "max_us": round(max(samples), 2),
        "mean_us": round(sum(samples) / len(samples), 3),
    }


async def _deploy(app: Any, resources: Resources, count: int) -> list[str]:
    from tests.scoring.helpers import deployed  # noqa: PLC0415 - a bench-time dependency

    async def auth(role: str, subject: str | None = None) -> dict[str, str]:
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject=subject or f"{role}-{uuid.uuid4().hex[:6]}", role=role),
            meta=EventMeta(actor="bench", role="admin"),
        )
        return {"Authorization": f"Bearer {issued.token}"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        first, _ = await deployed(client, auth, resources)
        extra = [await auth("scorer") for _ in range(count - 1)]
    return [h["Authorization"] for h in [first, *extra]]


async def _timed(seconds: float, op: Any) -> list[float]:
    samples: list[float] = []
    gc.collect()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        begin = time.perf_counter_ns()
        await op(i)
        samples.append((time.perf_counter_ns() - begin) / 1_000)
        i += 1
    return samples


async def measure(seconds: float, count: int) -> dict[str, Any]:
    """Figures of this checkout's code."""
    with tempfile.TemporaryDirectory(prefix="ml-bench-auth-") as home:
        return await _measure(Path(home), seconds, count)


async def _measure(home: Path, seconds: float, count: int) -> dict[str, Any]:
    async with common.bench_server() as (server, source), common.fresh_database(server) as url:
        settings = Settings(
            home=home,
            database_url=url,
            redis_url=os.environ.get("MODEL_LEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            dispatch_jobs=False,
            checkpoint_interval_seconds=3600,
            prediction_sample_rate=0.0,
            log_level="warning",
        )
        app = create_app(settings)
        async with common.app_lifespan(app):
            resources: Resources = app.state.resources
            authorizations = await _deploy(app, resources, count)
            plain = [a.removeprefix("Bearer ") for a in authorizations]
            body = msgspec.json.encode({"rows": [[0.1, 0.2, 0.3, 1.0]]})
            heads = [
                [
                    (b"authorization", a.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                for a in authorizations
            ]
            cold = []  # each token's first use: a cache that starts empty asks the database
            for token in plain:
                begin = time.perf_counter_ns()
                assert await resources.authenticator.authenticate(token) is not None
                cold.append((time.perf_counter_ns() - begin) / 1_000)
            assert (
                await _asgi(app, "POST", "/v1/score/fraud", b"environment=staging", heads[0], body)
                == 200
            )

            async def score(i: int) -> None:
                status = await _asgi(
                    app, "POST", "/v1/score/fraud", b"environment=staging", heads[i % count], body
                )
                assert status == 200, status

            async def health(_: int) -> None:
                await _asgi(app, "GET", "/health", b"", [], b"")

            async def authenticate(i: int) -> None:
                assert await resources.authenticator.authenticate(plain[i % count]) is not None

            figures = {
                "authenticate_first_use": _summary(cold),
                "authenticate": _summary(await _timed(seconds, authenticate)),
                "score": _summary(await _timed(seconds, score)),
                "health": _summary(await _timed(seconds / 3, health)),
                "tokens": count,
                "seconds": seconds,
                "notes": await common.machine_notes(resources.pool, source),
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    figures = common.run(measure(args.seconds, args.tokens))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
