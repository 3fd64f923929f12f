"""Running the API server process: first-start token, uvicorn, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import click
import uvicorn
from litestar.types import ASGIApp as ASGIApplication

from app.commands import ensure_admin_token
from app.main import create_app
from app.settings import Settings


def configure_logging(settings: Settings) -> None:
    """One log format for every server process."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )


def uvicorn_server(app: ASGIApplication, settings: Settings, port: int) -> uvicorn.Server:
    """uvicorn as every server process runs it (uvloop, httptools: chosen by measurement)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    return uvicorn.Server(config)


async def run_server(settings: Settings, *, with_worker: bool = False) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly), with a job worker if asked."""
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
    server = uvicorn_server(create_app(settings), settings, settings.port)
    if not with_worker:
        await server.serve()
        return
    from workers.main import in_process_worker  # noqa: PLC0415 - only this mode needs ML imports

    worker = in_process_worker(settings)
    running = asyncio.create_task(worker.main())
    click.echo("job worker running in this process")
    try:
        await server.serve()
    finally:
        # the polling loop stops first: closing the worker closes its Redis pool, which a
        # poll still running would find closed under it (and fail the exit)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()  # waits for the jobs it started
