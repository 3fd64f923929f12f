"""`model-ledger scorer`: a scoring-only process that follows deployments made elsewhere."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.resources import Resources
from app.settings import Settings
from domain import events as ev
from tests.conftest import TokenFactory
from tests.faults.harness import Process
from tests.http.governance_helpers import create_model
from tests.scoring.helpers import add_version, built, promote
from tests.test_serve import CLI

pytestmark = pytest.mark.processes


@pytest.fixture
def scorer_process(settings: Settings) -> Iterator[tuple[Process, str]]:
    """The command on the test's database, Redis and artifact folder, on a free port."""
    assert settings.database_url is not None and settings.redis_url is not None
    process = Process(
        ["scorer", "--port", "0"],
        {
            "MODEL_LEDGER_HOME": str(settings.home),
            "MODEL_LEDGER_DATABASE_URL": settings.database_url,
            "MODEL_LEDGER_REDIS_URL": settings.redis_url,
            "MODEL_LEDGER_SCORER_INSTANCE": "cmd-test",
        },
    )
    try:
        yield process, process.listening()
    finally:
        process.close()


async def _until(check: object, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_scorer_command_serves_and_follows_deployments(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    scorer_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = scorer_process
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    first = await add_version(client, ci, resources, "fraud", "seed0")
    second = await add_version(client, ci, resources, "fraud", "seed1")
    await promote(client, ci, "fraud", first)
    headers = await auth("scorer")
    row = {"rows": [[0.1, 0.2, 0.3, 1.0]]}

    async with httpx.AsyncClient(base_url=url, timeout=10) as remote:

        async def scores() -> bool:
            assert process.popen.poll() is None, process.text()
            answer = await remote.post(
                "/v1/score/fraud?environment=staging", json=row, headers=headers
            )
            return answer.status_code == 200

        # ready, following the deployment, and knowing the token issued by this process
        await _until(scores, "the scorer to score")
        assert (await remote.get("/health")).json() == {"status": "ok"}
        scored = await remote.post("/v1/score/fraud?environment=staging", json=row, headers=headers)
        assert scored.status_code == 200, scored.text
        assert scored.json()["version"] == first
        # its own prediction, still in its queue: the reward is recorded
        reward = {"prediction_id": scored.json()["prediction_ids"][0], "reward": 1}
        assert (await remote.post("/v1/feedback", json=reward, headers=headers)).status_code == 202
        assert (await remote.post("/v1/score/fraud", json=row)).status_code == 401

        await promote(client, ci, "fraud", second)  # appended by another process

        async def switched() -> bool:
            answer = await remote.post(
                "/v1/score/fraud?environment=staging", json=row, headers=headers
            )
            assert answer.status_code == 200, answer.text
            return bool(answer.json()["version"] == second)

        await _until(switched, "the switch to version 2", seconds=20)
        assert "model_ledger_prediction_log_rows_total" in (await remote.get("/metrics")).text

    assert await asyncio.to_thread(process.stop, 30) == 0
    loaded = [
        (r.event.version, r.event.library_sha256)
        for r in await resources.store.read_stream("scorer-cmd-test")
        if isinstance(r.event, ev.ScorerLoaded)
    ]
    assert loaded == [
        (first, built("seed0").library_sha256),
        (second, built("seed1").library_sha256),
    ]
    # what it scored was written by the time it stopped
    versions = await resources.pool.fetch("SELECT DISTINCT version FROM predictions")
    assert {r["version"] for r in versions} == {first, second}


def test_the_command_is_listed() -> None:
    shown = subprocess.run([CLI, "scorer", "--help"], capture_output=True, text=True, check=True)
    assert "--port" in shown.stdout and "scoring-only" in shown.stdout
    assert Path(CLI).exists()


# a separate scorer follows a deployment change within this long (LISTEN wake-up, the
# follower's pacing of `follow_interval_seconds`, the route rebuild); the README quotes the
# figures this test prints
SWITCH_BOUND_SECONDS = 2.0


async def test_another_scorer_switches_within_a_bounded_time(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    scorer_process: tuple[Process, str],
) -> None:
    process, url = scorer_process
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    for kind in ("seed0", "seed1", "seed2"):
        await add_version(client, ci, resources, "fraud", kind)
    await promote(client, ci, "fraud", 1)
    headers = await auth("scorer")
    row = {"rows": [[0.1, 0.2, 0.3, 1.0]]}
    latencies = []

    async with httpx.AsyncClient(base_url=url, timeout=10) as remote:

        async def version_scored() -> int:
            answer = await remote.post(
                "/v1/score/fraud?environment=staging", json=row, headers=headers
            )
            assert answer.status_code == 200, (answer.text, process.text())
            return int(answer.json()["version"])

        async def serving_first() -> bool:
            # until it follows the token issued here, and the deployment, it may refuse
            answer = await remote.post(
                "/v1/score/fraud?environment=staging", json=row, headers=headers
            )
            return answer.status_code == 200 and answer.json()["version"] == 1

        await _until(serving_first, "the scorer to serve version 1")
        for target in (2, 3, 1) * 4:
            await promote(client, ci, "fraud", target)
            answered = time.monotonic()
            while await version_scored() != target:
                assert time.monotonic() - answered < 20, f"never switched to {target}"
            latencies.append(time.monotonic() - answered)

    latencies.sort()
    print(  # the figure the README quotes
        f"\nanother scorer switched after the 201 in: median {latencies[len(latencies) // 2]:.3f}"
        f" s, max {latencies[-1]:.3f} s over {len(latencies)} promotions"
    )
    assert latencies[-1] < SWITCH_BOUND_SECONDS, latencies
