"""A revoked token stops working within a second in every process, and a new one starts.

The app runs in the test; a `model-ledger scorer` runs as a subprocess on the same database.
Tokens are issued and revoked in one and probed in the other until its answer changes;
each window is measured from before the revoking request was sent. Revocations travel by
NOTIFY; without it (a revoking store that never notifies), the poll still brings them.
Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.resources import Resources
from app.services import tokens
from app.services.authenticator import Authenticator
from app.settings import Settings
from app.store.events import EventStore
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import TokenFactory
from tests.faults.harness import Process
from tests.test_serve import CLI

pytestmark = pytest.mark.processes

TRIALS = 7
WINDOW = 1.0
# an authenticated route that needs no database: nothing is deployed, so 404 once admitted
PROBE = "/v1/score/nothing-deployed"


def _env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None and settings.redis_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
    return env | {
        "MODEL_LEDGER_HOME": str(settings.home),
        "MODEL_LEDGER_DATABASE_URL": settings.database_url,
        "MODEL_LEDGER_REDIS_URL": settings.redis_url,
        "MODEL_LEDGER_SCORER_INSTANCE": "revocation-test",
        "MODEL_LEDGER_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def scorer_url(settings: Settings) -> Iterator[str]:
    """`model-ledger scorer` on the test's database, as a subprocess on a free port."""
    process = Process(["scorer", "--port", "0"], _env(settings))
    try:
        yield process.listening()
    finally:
        process.close()


@pytest.fixture
async def remote(scorer_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=scorer_url, timeout=10) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (await client.get("/ready")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the scorer never became ready"
            await asyncio.sleep(0.1)
        yield client


async def _status(client: httpx.AsyncClient, token: str) -> int:
    answer = await client.post(
        PROBE, json={"rows": [[1.0]]}, headers={"Authorization": f"Bearer {token}"}
    )
    return answer.status_code


async def _until(client: httpx.AsyncClient, token: str, status: int, since: float) -> float:
    """Seconds from `since` until `client` answers `status` for `token` (deadline 30 s)."""
    while (await _status(client, token)) != status:
        assert time.perf_counter() - since < 30, f"no {status} after 30 s"
    return time.perf_counter() - since


def _report(what: str, windows: list[float]) -> None:
    print(
        f"\n{what}: p50 {statistics.median(windows) * 1000:.1f} ms, "
        f"max {max(windows) * 1000:.1f} ms over {len(windows)} trials"
    )


async def test_revoked_in_one_process_refused_by_the_other_within_a_second(
    client: httpx.AsyncClient, auth: TokenFactory, remote: httpx.AsyncClient
) -> None:
    admin = await auth("admin")
    issued_windows, revoked_windows = [], []
    for n in range(TRIALS):
        began = time.perf_counter()
        made = await client.post(
            "/v1/tokens", json={"subject": f"app-{n}", "role": "scorer"}, headers=admin
        )
        assert made.status_code == 201
        token, token_id = made.json()["token"], made.json()["token_id"]
        assert await _status(client, token) == 404  # at once where it was issued
        issued_windows.append(await _until(remote, token, 404, began))

        began = time.perf_counter()
        revoked = await client.delete(f"/v1/tokens/{token_id}", headers=admin)
        assert revoked.status_code == 200
        assert await _status(client, token) == 401  # at once where it was revoked
        revoked_windows.append(await _until(remote, token, 401, began))
    _report("issued here, admitted by the scorer process", issued_windows)
    _report("revoked here, refused by the scorer process", revoked_windows)
    assert max(issued_windows) < WINDOW and max(revoked_windows) < WINDOW


async def test_without_a_notification_the_poll_refuses_it_within_a_second(
    resources: Resources, remote: httpx.AsyncClient
) -> None:
    # a writer that never notifies: what reaches the scorer process comes from its poll
    silent = EventStore(resources.pool, notify=False)
    table = Authenticator(silent)
    meta = EventMeta(actor="silent-admin", role="admin")
    windows = []
    for n in range(TRIALS):
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject=f"polled-{n}", role="scorer"),
            meta=meta,
        )
        await _until(remote, issued.token, 404, time.perf_counter())
        began = time.perf_counter()
        await tokens.revoke(
            silent, resources.projector, table, issued.token_id, reason="poll", meta=meta
        )
        windows.append(await _until(remote, issued.token, 401, began))
    _report("revoked without NOTIFY, refused by the scorer process", windows)
    assert max(windows) < WINDOW


async def test_revoked_by_the_command_line_refused_by_the_app_within_a_second(
    client: httpx.AsyncClient, auth: TokenFactory, settings: Settings
) -> None:
    admin = await auth("admin", "operator")
    made = await client.post(
        "/v1/tokens", json={"subject": "cli-victim", "role": "ci"}, headers=admin
    )
    token, token_id = made.json()["token"], made.json()["token_id"]
    assert (
        await client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200
    command = [CLI, "tokens", "revoke", token_id, "--reason", "compromised"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=_env(settings), capture_output=True, text=True, check=False
    )
    began = time.perf_counter()  # the revocation is committed once the command has exited
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"reason":"compromised"' in done.stdout and '"revoked_by":"cli:' in done.stdout
    while (
        await client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    ).status_code != 401:
        assert time.perf_counter() - began < WINDOW, "the app still admits the revoked token"
    page = await client.get("/v1/events", params={"type": "token.revoked"}, headers=admin)
    [event] = page.json()["events"]
    assert event["meta"]["actor"].startswith("cli:") and event["meta"]["role"] == "admin"

    listed = await asyncio.to_thread(
        subprocess.run,
        [CLI, "tokens", "list", "--subject", "CLI-victim"],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        token_id in listed.stdout and token not in listed.stdout and "sha256" not in listed.stdout
    )
    unknown = await asyncio.to_thread(
        subprocess.run,
        [CLI, "tokens", "revoke", "0123456789abcdef"],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1 and "no token" in unknown.stderr
