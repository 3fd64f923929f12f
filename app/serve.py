"""Running the API server process: first-start token, uvicorn, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import click
import uvicorn

from app.commands import ensure_admin_token
from app.main import create_app
from app.settings import Settings


async def run_server(settings: Settings, *, with_worker: bool = False) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly), with a job worker if asked."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    token = await ensure_admin_token(settings)
    url = f"http://{settings.host}:{settings.port}"
    if token is not None:
        click.echo(f"first start: admin token (also in {settings.admin_token_file}):\n  {token}")
    else:
        click.echo(
            f"admin token: see {settings.admin_token_file} (or issue one with tokens create)"
        )
    click.echo(f"Model Ledger API on {url}  (OpenAPI: {url}/schema/swagger)")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
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
        await worker.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
