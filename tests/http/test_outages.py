"""Store outages answer 503 problem details with `Retry-After`, never 500, and the servers
recover by themselves once the store is back.

The database is a PostgreSQL of the test's own (the embedded one), stopped and started again:
its unix socket file disappears meanwhile, as in the report. Redis is a socket path nobody
listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar import Litestar

from app.embedded import EmbeddedStack
from app.main import create_app
from app.resources import Resources
from app.scorer_app import create_scorer_app
from app.services import tokens
from app.settings import Settings
from app.store.migrate import migrate
from domain.events import EventMeta, Role
from domain.tokens import IssueToken
from tests.conftest import running
from tests.http.governance_helpers import create_model, register_version
from tests.http.test_problems import documented_problem
from tests.workers.jobs_helpers import wait_for

pytestmark = pytest.mark.processes

JOB = {"kind": "compile", "model": "m", "version": 1}
# (method, path template, path, body): reads, writes, a job request, the audit views
DURING_THE_OUTAGE = [
    ("GET", "/v1/models", "/v1/models", None),
    ("GET", "/v1/models/{name}", "/v1/models/m", None),
    ("POST", "/v1/models", "/v1/models", {"name": "late", "risk_tier": "low"}),
    ("POST", "/v1/jobs", "/v1/jobs", JOB),
    ("GET", "/v1/events", "/v1/events", None),
    ("GET", "/v1/models/{name}/history", "/v1/models/m/history", None),
    ("GET", "/v1/registry", "/v1/registry", None),
]


@pytest.fixture
def own_home() -> Iterator[Path]:
    # not under pytest's tmp folder: see tests/test_embedded.py
    base = Path(tempfile.mkdtemp(prefix="model-ledger-outage-"))
    yield base / "home"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def own_stack(own_home: Path) -> AsyncIterator[EmbeddedStack]:
    """A migrated PostgreSQL of this test's own (its Redis is not used)."""
    stack = EmbeddedStack(own_home)
    await asyncio.to_thread(stack.start)
    try:
        await asyncio.to_thread(migrate, stack.database_url)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


async def _token(resources: Resources, role: Role) -> dict[str, str]:
    issued = await tokens.issue(
        resources.store,
        resources.projector,
        resources.minter,
        IssueToken(subject=f"{role}-{uuid.uuid4().hex[:6]}", role=role),
        meta=EventMeta(actor="test-setup", role="admin"),
    )
    return {"Authorization": f"Bearer {issued.token}"}


@contextlib.asynccontextmanager
async def _client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
        yield http


def assert_outage(response: httpx.Response, method: str, template: str, store: str) -> None:
    """A documented 503 naming `store` in plain words, with Retry-After."""
    body = documented_problem(response, method, template, 503)
    assert body["detail"].startswith(f"{store} is unavailable"), body
    assert int(response.headers["retry-after"]) > 0


def assert_plain(detail: str) -> None:
    """Nothing of the machine or the code: no path, no exception class name."""
    assert "/" not in detail and "Error" not in detail and "errno" not in detail.lower(), detail


async def test_a_database_outage_is_a_503_and_both_servers_recover_by_themselves(
    own_stack: EmbeddedStack, tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=own_stack.database_url,
        redis_url=redis_url,
        queue_name=f"model-ledger-test:{uuid.uuid4().hex[:12]}",
        checkpoint_interval_seconds=3600,
        dispatch_jobs=False,
    )
    async with (
        running(create_app(settings)) as api,
        running(create_scorer_app(settings)) as scorer,
        _client(api) as client,
        _client(scorer) as scoring,
    ):
        admin = await _token(api.state.resources, "admin")
        scorer_headers = await _token(api.state.resources, "scorer")
        assert (await create_model(client, admin, "m")).status_code == 201
        assert (await register_version(client, admin, "m")).status_code == 201

        # both tokens are in the authentication caches: the requests reach the handlers (the
        # scorer, another process, learns of a token issued elsewhere once it follows the log)
        async def admitted() -> bool:
            nothing = await scoring.post(
                "/v1/score/m", json={"rows": [[1]]}, headers=scorer_headers
            )
            assert nothing.status_code in (401, 404), nothing.text
            return nothing.status_code == 404

        await wait_for(admitted, seconds=10, every=0.02)
        assert (await client.get("/v1/models", headers=admin)).status_code == 200

        await asyncio.to_thread(own_stack.stop)  # its socket file is gone until it starts again

        for method, template, path, body in DURING_THE_OUTAGE:
            answer = await client.request(method, path, json=body, headers=admin)
            assert_outage(answer, method, template, "the database")
        # authentication needs no database: the token table in memory still refuses strangers
        unknown = {"Authorization": "Bearer mlt_0123456789abcdef_unknownsecret"}
        stranger = await client.get("/v1/models", headers=unknown)
        assert stranger.status_code == 401, stranger.text
        # the scorer app shares the mapping
        reward = {"prediction_id": str(uuid.uuid4()), "reward": 1}
        feedback = await scoring.post("/v1/feedback", json=reward, headers=scorer_headers)
        assert_outage(feedback, "POST", "/v1/feedback", "the database")
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json()["detail"] == "not ready: the database does not answer"
        assert_plain(ready.json()["detail"])
        # the scorer still scores from memory: ready, saying what is away
        scorer_ready = await scoring.get("/ready")
        assert scorer_ready.status_code == 200, scorer_ready.text
        assert scorer_ready.json()["database"] == "unavailable"

        await asyncio.to_thread(own_stack.start)

        async def recovered() -> bool:
            answers = [await c.get("/ready") for c in (client, scoring)]
            return all(a.status_code == 200 for a in answers)

        await wait_for(recovered, seconds=60)
        assert (await client.get("/v1/models/m", headers=admin)).status_code == 200
        assert (await create_model(client, admin, "after")).status_code == 201
        feedback = await scoring.post("/v1/feedback", json=reward, headers=scorer_headers)
        assert feedback.status_code == 404, feedback.text  # answered again: no such prediction


@pytest.fixture
async def redis_gone(settings: Settings, tmp_path: Path) -> AsyncIterator[Litestar]:
    """The app with Redis at a unix socket whose file does not exist."""
    moved = msgspec.structs.replace(settings, redis_url=f"unix://{tmp_path}/nobody.sock")
    async with running(create_app(moved)) as app:
        yield app


async def test_with_redis_down_jobs_are_still_requested_and_ready_names_redis(
    redis_gone: Litestar,
) -> None:
    async with _client(redis_gone) as client:
        ci = await _token(redis_gone.state.resources, "ci")
        assert (await create_model(client, ci, "m")).status_code == 201
        registered = await register_version(client, ci, "m")  # requests a compile job too
        assert registered.status_code == 201, registered.text
        job = await client.post("/v1/jobs", json=JOB, headers=ci)
        assert job.status_code == 202, job.text  # it waits in the log for the dispatcher
        status = await client.get(f"/v1/jobs/{job.json()['job_id']}", headers=ci)
        assert status.json()["status"] == "requested"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "not ready: Redis does not answer"
        assert_plain(ready.json()["detail"])
