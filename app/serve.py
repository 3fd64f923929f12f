"""Running the API server process: first-start token, uvicorn, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import os
import socket
from pathlib import Path
from typing import IO

import click
import uvicorn
from litestar import Litestar
from litestar.types import ASGIApp as ASGIApplication

from app import logs
from app.commands import ensure_admin_token
from app.http_protocol import BoundedHeadProtocol
from app.main import create_app
from app.settings import Settings


def configure_logging(settings: Settings) -> None:
    """One log format for every server process."""
    logs.configure_logging(settings.log_level)


def uvicorn_server(app: ASGIApplication, settings: Settings, port: int) -> uvicorn.Server:
    """uvicorn as every server process runs it (uvloop, httptools: chosen by measurement;
    request heads bounded)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        loop="uvloop",
        http=BoundedHeadProtocol,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    return uvicorn.Server(config)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for the server to listen on; a clear message if taken.

    Bound before anything starts, so a clash ends the command at once, not in a traceback
    from uvicorn once the embedded stack is up and migrated.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is in use (another server?); "
                "choose another with --port (or MODEL_LEDGER_PORT / MODEL_LEDGER_SCORER_PORT)"
            ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def claim_home(home: Path, url: str, *, share: bool) -> IO[bytes] | None:
    """Make this the one `serve` of an embedded home: a lock held for the process's life,
    naming its pid and URL. Another serve holding it is an error, unless `share` (then
    None: this one is a second API on the same stores). A killed serve's lock dies with it.
    """
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / "serve.lock").open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        running = handle.read().decode(errors="replace").strip() or "one still starting"
        handle.close()
        if share:
            click.echo(f"sharing this home with the serve running on it ({running})")
            return None
        raise click.ClickException(
            f"another `model-ledger serve` is running on {home} ({running}); stop it, "
            "use another MODEL_LEDGER_HOME, or pass --share-home to run a second API on "
            "the same embedded stores"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, {url}".encode())
    handle.flush()
    return handle


def serving_app(settings: Settings) -> Litestar:
    """The application `serve` runs: its heap is settled once it has started."""
    app = create_app(settings)
    app.on_startup.append(settle_heap)
    return app


def settle_heap(_: Litestar) -> None:
    """What exists once the server has started (modules, routes, resources, the token
    table) lives as long as the process: collected once, then moved out of the cyclic
    GC's generations, so its collections stop traversing it again. Under concurrent
    writes the collector took about 10% of the API's CPU before, 4% after (measured)."""
    gc.collect()
    gc.freeze()


async def run_server(
    settings: Settings, *, with_worker: bool = False, sockets: list[socket.socket] | None = None
) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly), with a job worker if asked; on
    `sockets` if given (bound already), else on settings.host and port."""
    configure_logging(settings)
    token = await ensure_admin_token(settings)
    url = f"http://{settings.host}:{settings.port}"
    if token is not None:
        click.echo(f"first start: admin token (also in {settings.admin_token_file}):\n  {token}")
    else:
        click.echo(
            f"admin token: see {settings.admin_token_file} (or issue one with tokens create)"
        )
    click.echo(f"Model Ledger API on {url}  (OpenAPI: {url}/schema/swagger)")
    server = uvicorn_server(serving_app(settings), settings, settings.port)
    if not with_worker:
        await server.serve(sockets=sockets)
        return
    from workers.main import in_process_worker  # noqa: PLC0415 - only this mode needs ML imports

    worker = in_process_worker(settings)
    running = asyncio.create_task(worker.main())
    click.echo("job worker running in this process")
    try:
        await server.serve(sockets=sockets)
    finally:
        # the polling loop stops first: closing the worker closes its Redis pool, which a
        # poll still running would find closed under it (and fail the exit)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()  # waits for the jobs it started
