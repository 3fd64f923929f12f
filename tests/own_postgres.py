"""A PostgreSQL of a test's own (pgserver, in a temporary folder) that the test stops and
starts again: outages without touching the machine's server."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pgserver asks platformdirs for a runtime dir on import
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo


class OwnPostgres:
    """A pgserver PostgreSQL in `folder`: the same socket, hence URL, across restarts."""

    def __init__(self, folder: Path) -> None:
        self.pgdata = folder / "pgdata"
        self._server: PostgresServer | None = None
        self._url: str | None = None

    def start(self) -> None:
        """Start the server (initialising its data on the first start)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # Not get_server(): it caches handles per path and would return a stopped server.
        self._server = PostgresServer(self.pgdata, cleanup_mode=None)
        socket_dir = self._server.get_postmaster_info().socket_dir
        self._url = f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"

    @property
    def url(self) -> str:
        """The `postgres` database, over the unix socket."""
        assert self._url is not None, "never started"
        return self._url

    def stop(self) -> None:
        """A fast shutdown (what `pg_ctl stop` sends); returns once the server is gone."""
        if self._server is not None:
            self._server.cleanup()  # cleanup_mode=None: only releases pgserver's handle
            atexit.unregister(self._server._cleanup)
            self._server = None
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running():
            return
        os.kill(info.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while (self.pgdata / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL in {self.pgdata} did not stop")
            time.sleep(0.02)


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A started server, stopped and removed afterwards.

    Not under pytest's tmp folder: as root, pgserver runs PostgreSQL as its own user, which
    must traverse every parent folder, and each pytest session resets that folder to 0700.
    """
    folder = Path(tempfile.mkdtemp(prefix="model-ledger-own-pg-"))
    server = OwnPostgres(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
