"""`model-ledger demo` tells its story against a server with a worker running beside it."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import msgspec
import pytest
from litestar import Litestar

from app.demo import run_demo
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from domain.events import EventMeta
from domain.tokens import IssueToken
from workers.main import in_process_worker

pytestmark = pytest.mark.processes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, dispatch_jobs=True, job_timeout_seconds=300.0)


async def test_the_demo_runs_the_story_end_to_end(
    settings: Settings, app: Litestar, resources: Resources
) -> None:
    admin = await tokens.issue(
        resources.store,
        resources.projector,
        resources.minter,
        IssueToken(subject="operator", role="admin"),
        meta=EventMeta(actor="test-setup", role="admin"),
    )
    worker = in_process_worker(msgspec.structs.replace(settings, worker_max_jobs=2))
    running = asyncio.create_task(worker.main())
    lines: list[str] = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
            outcome = await run_demo(http, admin.token, lines.append, rows=3_000, trees=(20, 30))
    finally:
        print("\n".join(lines))  # the story so far, shown when the test fails
        await worker.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    story = "\n".join(lines)
    assert outcome["verified"] is True, story
    assert outcome["history"] > 20, story
    for step in (
        "train job",
        "compile job",
        "compliance job",
        "to production",
        "canary: version",
        "drift job",
        "the policy demotes the drifting canary",
        "challenger None",
    ):
        assert step in story, f"{step!r} missing from:\n{story}"
    assert "positions" in story and "version.compiled" in story
    # each step lists only the events it caused: never a scorer's own scorer.loaded, which
    # the scorer appended meanwhile
    loaded = "SELECT count(*) FROM events WHERE type = 'scorer.loaded'"
    assert await resources.pool.fetchval(loaded) > 0
    assert "scorer.loaded" not in story, story
    # the drift job's alerts, then the policy's demotion of the canary
    assert story.rindex("deployment.changed") > story.index("drift.detected"), story
