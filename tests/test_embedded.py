"""The embedded PostgreSQL + Redis stack used when no service URLs are configured."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
import pytest
import redis.asyncio
from arq import create_pool
from arq.connections import RedisSettings
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import main
from app.embedded import EmbeddedStack
from app.resources import open_resources
from app.settings import Settings
from app.store.migrate import migrate
from app.store.roles import APP_ROLE, OWNER_ROLE, ensure_roles, inspect_role
from domain.events import EventMeta, TokenRevoked
from tests.store.test_checkpoint_migration import sign_the_old_way

pytestmark = pytest.mark.processes


@pytest.fixture
def home() -> Iterator[Path]:
    """A data folder outside pytest's tmp_path.

    As root, pgserver runs PostgreSQL as its own user, which must traverse every parent folder,
    and each pytest session that starts (a concurrent one included) resets /tmp/pytest-of-root
    to 0700, locking a running server out of its data.
    """
    base = Path(tempfile.mkdtemp(prefix="model-ledger-test-"))
    yield base / "home"
    shutil.rmtree(base)


@pytest.fixture
def embedded(home: Path) -> Iterator[EmbeddedStack]:
    # Not named `stack`: that is conftest's session-wide stack, which this must not shadow.
    with EmbeddedStack(home) as started:
        yield started


def _server_processes(home: Path) -> list[psutil.Process]:
    """The postmaster with its children, and redis-server, found through their pid files."""
    found = []
    for pid_file in (home / "postgres" / "postmaster.pid", home / "redis" / "redis.pid"):
        process = psutil.Process(int(pid_file.read_text().split()[0]))
        found += [process, *process.children(recursive=True)]
    return found


def _server_pids(home: Path) -> list[int]:
    """The postmaster's and redis-server's pids, from their pid files."""
    files = (home / "postgres" / "postmaster.pid", home / "redis" / "redis.pid")
    return [int(f.read_text().split()[0]) for f in files]


def _survivors(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running after a short grace period for processes already on their way out."""

    def running(process: psutil.Process) -> bool:
        # Daemons are reparented to init, which may reap them late: a zombie has exited.
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 5
    while any(running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in processes if running(p)]


def _remove_folders(*folders: Path) -> None:
    for folder in folders:
        folder.rmdir()


async def _assert_reachable(stack: EmbeddedStack) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()

    engine = create_async_engine(
        stack.database_url.replace("postgresql://", "postgresql+asyncpg://")
    )
    try:
        async with engine.connect() as sa_conn:
            assert (await sa_conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()

    client = redis.asyncio.Redis.from_url(stack.redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()

    pool = await create_pool(RedisSettings.from_dsn(stack.redis_url))
    try:
        assert await pool.ping()
        job = await pool.enqueue_job("embedded_smoke_test")
        assert job is not None
        assert await pool.zcard("arq:queue") == 1
    finally:
        await pool.aclose()


async def test_clients_connect(embedded: EmbeddedStack) -> None:
    assert embedded.database_url.startswith("postgresql://postgres@/postgres?host=/")
    assert embedded.redis_url == f"unix://{embedded.home}/redis/redis.sock"
    await _assert_reachable(embedded)


async def test_socket_paths_stay_short_for_a_long_home(home: Path) -> None:
    long_home = home / ("deeply-nested-data-folder-" * 5) / "home"
    with EmbeddedStack(long_home) as stack:
        assert str(long_home) not in stack.redis_url
        database_url = stack.database_url
        assert str(long_home) not in database_url
        assert len(stack.redis_url.removeprefix("unix://")) < 100
        await _assert_reachable(stack)
    # Both fallback socket folders sit outside `home` and are empty once the servers are gone.
    _remove_folders(
        Path(stack.redis_url.removeprefix("unix://")).parent,
        Path(parse_qs(urlsplit(database_url).query)["host"][0]),
    )


async def test_restart_reuses_data(home: Path) -> None:
    with EmbeddedStack(home) as first:
        first.start()  # a second start is a no-op
        conn = await asyncpg.connect(first.database_url)
        try:
            await conn.execute("CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (7)")
        finally:
            await conn.close()
        client = redis.asyncio.Redis.from_url(first.redis_url)
        try:
            await client.set("survivor", "yes")
        finally:
            await client.aclose()

    with EmbeddedStack(home) as second:
        conn = await asyncpg.connect(second.database_url)
        try:
            assert await conn.fetchval("SELECT id FROM survivor") == 7
        finally:
            await conn.close()
        client = redis.asyncio.Redis.from_url(second.redis_url)
        try:
            assert await client.get("survivor") == b"yes"
        finally:
            await client.aclose()


def test_stop_leaves_no_server_processes(home: Path) -> None:
    stack = EmbeddedStack(home)
    stack.start()
    processes = _server_processes(home)
    assert {p.name() for p in processes} == {"postgres", "redis-server"}
    assert stack.stop() is True
    assert stack.stop() is False  # a second stop is a no-op
    assert _survivors(processes) == []
    assert not (home / "postgres" / "postmaster.pid").exists()
    assert not (home / "redis" / "redis.pid").exists()
    with pytest.raises(RuntimeError):
        _ = stack.database_url


async def test_a_second_stack_on_a_running_home_shares_it(home: Path) -> None:
    with EmbeddedStack(home) as first:
        processes = _server_processes(home)
        second = EmbeddedStack(home)  # say, `tokens create` while `serve` runs
        second.start()
        await _assert_reachable(second)
        assert second.stop() is False  # the first still uses them
        assert _survivors(processes) == processes
        conn = await asyncpg.connect(first.database_url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    assert _survivors(processes) == []


async def test_the_servers_outlive_the_process_that_started_them_while_another_uses_them(
    home: Path,
) -> None:
    """`serve` stopped while a `scorer` uses the stack: the last one to stop stops them."""
    first = EmbeddedStack(home)
    first.start()
    processes = _server_processes(home)
    second = EmbeddedStack(home)
    second.start()
    try:
        assert first.stop() is False
        assert _survivors(processes) == processes
        await _assert_reachable(second)
    finally:
        assert second.stop() is True
    assert _survivors(processes) == []


# it waits to be killed: until then its stdin stays open (and ends with the test's process)
_USE_AND_WAIT = """
import sys
from pathlib import Path
from app.embedded import EmbeddedStack
EmbeddedStack(Path(sys.argv[1])).start()
print("started", flush=True)
sys.stdin.read()
"""


def _killed_user(home: Path) -> list[psutil.Process]:
    """The servers a process started on `home` before it was killed (SIGKILL)."""
    user = subprocess.Popen(
        [sys.executable, "-c", _USE_AND_WAIT, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert user.stdout is not None and user.stdout.readline() == "started\n"
        return _server_processes(home)
    finally:
        user.kill()  # no exit hook runs: the servers stay up
        user.wait()
        assert user.stdin is not None and user.stdout is not None
        user.stdin.close()
        user.stdout.close()


async def test_servers_left_by_a_killed_process_are_adopted_and_stopped(home: Path) -> None:
    processes = _killed_user(home)
    assert _survivors(processes) == processes
    servers = _server_pids(home)
    with EmbeddedStack(home) as adopter:
        # the same postmaster and redis-server (their children come and go: autovacuum)
        assert _server_pids(home) == servers
        await _assert_reachable(adopter)
    assert _survivors(processes) == []


def test_home_path_pgserver_cannot_pass_to_postgres(home: Path) -> None:
    with pytest.raises(ValueError, match="without spaces"):
        EmbeddedStack(home / "my data")


# --- least privilege: the superuser creates the roles, the application runs as its own


async def test_the_stack_creates_both_roles_and_serves_the_app_role(
    embedded: EmbeddedStack,
) -> None:
    conn = await asyncpg.connect(embedded.app_database_url)
    try:
        assert await conn.fetchval("SELECT current_user") == APP_ROLE
        roles = {
            row["rolname"]: row
            for row in await conn.fetch(
                "SELECT * FROM pg_roles WHERE rolname = ANY($1)", [APP_ROLE, OWNER_ROLE]
            )
        }
    finally:
        await conn.close()
    assert set(roles) == {APP_ROLE, OWNER_ROLE}
    for role in roles.values():
        assert role["rolcanlogin"] and not role["rolsuper"] and not role["rolcreaterole"]


async def _waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> None:
    deadline = time.monotonic() + 30
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"
    while await conn.fetchval(query, pid) != "Lock":
        assert time.monotonic() < deadline, "the second session never waited"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("state", ["missing", "nologin"])
async def test_roles_made_by_two_sessions_at_once_are_made_once(
    embedded: EmbeddedStack, state: str
) -> None:
    # concurrent test runs (or ledgers) on one server: the second session creates (or
    # changes) a role the first has created (or changed) but not committed, so it waits on
    # it and then finds it done; it must not fail
    first = await asyncpg.connect(embedded.database_url)
    second = await asyncpg.connect(embedded.database_url)
    try:
        if state == "missing":
            await first.execute(f"DROP ROLE {OWNER_ROLE}; DROP ROLE {APP_ROLE}")
        else:  # as migration 0001 of an earlier version left it
            await first.execute(f"ALTER ROLE {APP_ROLE} NOLOGIN")
        async with first.transaction():
            await ensure_roles(first)
            racing = asyncio.create_task(ensure_roles(second))
            await _waiting_for_a_lock(first, second.get_server_pid())
        await racing
        logins = await second.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1) AND rolcanlogin",
            [APP_ROLE, OWNER_ROLE],
        )
        assert {row[0] for row in logins} == {APP_ROLE, OWNER_ROLE}
    finally:
        await first.close()
        await second.close()


async def _as_an_earlier_version_left_it(home: Path) -> None:
    """No owner role, the application role NOLOGIN, the schema migrated and written by
    the superuser `postgres`."""
    with EmbeddedStack(home) as old:
        conn = await asyncpg.connect(old.database_url)
        try:
            await conn.execute(f"DROP ROLE {OWNER_ROLE}; ALTER ROLE {APP_ROLE} NOLOGIN")
        finally:
            await conn.close()
        await asyncio.to_thread(migrate, old.database_url, "0005")
        settings = Settings(home=home, database_url=old.database_url, redis_url=old.redis_url)
        async with open_resources(settings) as resources:
            for n in range(3):
                await resources.store.append(
                    "s",
                    [TokenRevoked(token_id=f"t{n}", reason="r")],
                    meta=EventMeta(actor="old", role="admin"),
                    expected_version=None,
                )
            # as that version signed: no sequence, no chain (those came with 0007)
            await sign_the_old_way(resources.pool, resources.signing_key)


def _cli(home: Path, *args: str) -> str:
    env = {k: "" for k in os.environ if k.startswith("MODEL_LEDGER_")}
    result = CliRunner().invoke(
        main, list(args), env=env | {"MODEL_LEDGER_HOME": str(home)}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout  # verify writes its JSON report there, its notes to stderr


async def test_a_home_of_an_earlier_version_upgrades_to_least_privilege(home: Path) -> None:
    await _as_an_earlier_version_left_it(home)
    # what `serve` does first on the embedded stack: the roles, then migrations as the owner
    assert "latest" in await asyncio.to_thread(_cli, home, "migrate")
    report = json.loads(await asyncio.to_thread(_cli, home, "verify"))
    assert report["ok"] and report["checked"] == 3 and report["checkpoints_checked"] == 1
    with EmbeddedStack(home) as stack:
        conn = await asyncpg.connect(stack.database_url)
        try:
            foreign = await conn.fetch(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                " AND relkind IN ('r', 'S') AND relowner <> $1::regrole",
                OWNER_ROLE,
            )
        finally:
            await conn.close()
        assert foreign == []
        app = await asyncpg.connect(stack.app_database_url)
        try:
            assert (await inspect_role(app)).least_privilege
        finally:
            await app.close()
