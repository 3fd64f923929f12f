"""Shared fixtures: real PostgreSQL and Redis, a fresh database per test.

`MODEL_LEDGER_TEST_DATABASE_URL` / `MODEL_LEDGER_TEST_REDIS_URL` name servers to use (CI);
unset, an embedded PostgreSQL and Redis start in a temporary folder for the session.
Each test gets its own database, cloned from a migrated template, so runs and tests
cannot interfere (the log itself refuses TRUNCATE, so there is nothing to clean).
The given URL names a superuser: it creates the roles (shared by every database of the
server) and the databases; the template is migrated by the owner role, and the tests'
`database_url` connects as the application role, as a deployed server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_timeout
from litestar import Litestar

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from app.store.migrate import migrate
from app.store.roles import APP_ROLE, OWNER_ROLE, ensure_roles
from domain.events import EventMeta
from domain.tokens import IssueToken

RUN_ID = uuid.uuid4().hex[:8]
# an app that does not shut down within this fails its test, with every task's stack
_SHUTDOWN_SECONDS = 30


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: pytest_timeout.Settings) -> bool | None:
    """A test past its timeout (pyproject's `timeout`) fails, rather than hanging the run, and
    says where it waited: the stack of every asyncio task as well as of every thread."""
    if settings.method != "signal":
        return None

    def on_timeout(signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # no loop running: the threads' stacks suffice
            for task in asyncio.all_tasks(asyncio.get_running_loop()):
                task.print_stack(file=sys.stderr)
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # what pytest-timeout cancels
    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def with_user(url: str, user: str) -> str:
    """The same server and database as another role (no password: trust authentication)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))


# the server's superuser, known once the session's `stack` fixture has run
_SUPERUSER: dict[str, str] = {}


def superuser_url(database_url: str) -> str:
    """The same database as the server's superuser (tampering tests, role checks)."""
    superuser = urlsplit(_SUPERUSER["url"])
    return urlunsplit(urlsplit(database_url)._replace(netloc=superuser.netloc))


@pytest.fixture(scope="session")
def stack() -> Iterator[tuple[str, str]]:
    database_url = os.environ.get("MODEL_LEDGER_TEST_DATABASE_URL")
    redis_url = os.environ.get("MODEL_LEDGER_TEST_REDIS_URL")
    if database_url and redis_url:
        _SUPERUSER["url"] = database_url
        yield database_url, redis_url
        return
    from app.embedded import EmbeddedStack

    # not under pytest's tmp folder: a concurrent pytest run resets its permissions, which
    # would lock the embedded PostgreSQL (running as its own user) out of its data
    home = Path(tempfile.mkdtemp(prefix="model-ledger-test-"))
    try:
        with EmbeddedStack(home) as embedded:
            _SUPERUSER["url"] = database_url or embedded.database_url
            yield _SUPERUSER["url"], redis_url or embedded.redis_url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url(stack: tuple[str, str]) -> str:
    return stack[0]


@pytest.fixture(scope="session")
def redis_url(stack: tuple[str, str]) -> str:
    return stack[1]


async def _admin(server_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(server_url)


@pytest.fixture(scope="session")
async def template_database(server_url: str) -> AsyncIterator[str]:
    name = f"ml_test_{RUN_ID}_template"
    conn = await _admin(server_url)
    try:
        # concurrent runs on one server may create the roles at the same time: race-safe
        await ensure_roles(conn)
        await conn.execute(f'CREATE DATABASE "{name}" OWNER {OWNER_ROLE}')
        owner_url = with_user(with_database(server_url, name), OWNER_ROLE)
        await asyncio.to_thread(migrate, owner_url)
        yield name
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"ml_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    conn = await _admin(server_url)
    try:
        await conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{template_database}" OWNER {OWNER_ROLE}'
        )
        yield with_user(with_database(server_url, name), APP_ROLE)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def blank_database(server_url: str) -> AsyncIterator[str]:
    """An empty database created by the superuser, as an operator would: its superuser URL."""
    name = f"ml_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    conn = await _admin(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        redis_url=redis_url,
        checkpoint_interval_seconds=3600,
        # small, so as-of reads in tests go through snapshots and replays alike
        model_snapshot_every=7,
        queue_name=f"model-ledger-test:{uuid.uuid4().hex[:12]}",
        max_body_bytes=64 * 1024,
        # only the job tests relay requests to Redis (they turn this on); elsewhere the
        # compile requests every registered version makes would pile up in the queue
        dispatch_jobs=False,
    )


@contextlib.asynccontextmanager
async def running(application: Litestar) -> AsyncIterator[Litestar]:
    """Run the app's lifespan in a task of its own: anyio scopes must exit where they began."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with application.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield application
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), _SHUTDOWN_SECONDS)
        except TimeoutError:
            for pending in asyncio.all_tasks():
                pending.print_stack()
            raise


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Litestar]:
    async with running(create_app(settings)) as application:
        yield application


@pytest.fixture
def resources(app: Litestar) -> Resources:
    found: Resources = app.state.resources
    return found


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
        yield http


TokenFactory = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture
def auth(resources: Resources) -> TokenFactory:
    """`await auth("ci")` → headers carrying a fresh token of that role."""

    async def make(role: str, subject: str | None = None) -> dict[str, str]:
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject=subject or f"{role}-{uuid.uuid4().hex[:6]}", role=role),
            meta=EventMeta(actor="test-setup", role="admin"),
        )
        return {"Authorization": f"Bearer {issued.token}"}

    return make


@contextlib.asynccontextmanager
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection as the server's superuser (for tampering tests)."""
    conn = await asyncpg.connect(superuser_url(database_url))
    try:
        yield conn
    finally:
        await conn.close()
