"""Explicit wiring: the one place that opens pools and builds the services from settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from arq.connections import ArqRedis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.outages import connect_database
from app.scoring.background import Scoring, build_scoring
from app.services.authenticator import Authenticator
from app.services.datasets import Datasets
from app.services.dispatch import Dispatcher, queue_connection
from app.services.governance import Governance
from app.services.jobs import Jobs
from app.services.lightgbm_sandbox import LightGBMSandbox
from app.services.registry import Registry
from app.services.retraining import RetrainingReactor
from app.services.sweeper import Sweeper
from app.services.tokens import TokenMinter
from app.settings import Settings
from app.store.artifacts import ArtifactStore
from app.store.checkpoints import Checkpointer, load_or_create_key, private_raw
from app.store.events import EventStore
from app.store.inline import InlineProjections
from app.store.projections import all_projections
from app.store.projector import Projector
from app.store.roles import RoleCheck, warning
from app.store.witness import Witness

_log = logging.getLogger("model_ledger")


@dataclass(frozen=True)
class Resources:
    """What request handlers, background tasks and commands share in one process."""

    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    store: EventStore
    projector: Projector
    authenticator: Authenticator
    signing_key: Ed25519PrivateKey
    checkpointer: Checkpointer
    minter: TokenMinter
    governance: Governance
    registry: Registry
    artifacts: ArtifactStore
    jobs: Jobs
    dispatcher: Dispatcher
    sweeper: Sweeper
    clock: Callable[[], datetime]
    scoring: Scoring
    # what the database role could do to the log (reported by /ready)
    database_role: RoleCheck
    # reads uploaded LightGBM models out of this process
    sandbox: LightGBMSandbox
    datasets: Datasets
    # hands critical alerts to their models' retraining policies
    retraining: RetrainingReactor


async def _as_it_is(_conn: asyncpg.Connection) -> None:
    """A released connection needs no reset: nothing leaves session state on a pooled one.

    Settings are `SET LOCAL` (or, as lz4 is, the same on every connection) and locks are
    transaction-scoped, except the checkpointer's session lock, which it releases or closes
    the connection over; LISTEN has a connection of its own. asyncpg's default reset (unlock
    all, CLOSE ALL, UNLISTEN *, RESET ALL) is a round trip on every release: a third of a
    command's statements. An open transaction is still rolled back (asyncpg does that first).
    """


async def _prefer_lz4(conn: asyncpg.Connection) -> None:
    """Model states are large and rewritten by every write: where the server has lz4, it
    compresses them about 5x faster than the default pglz, to the same size."""
    if await conn.fetchval(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ):
        await conn.execute("SET default_toast_compression = lz4")


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool for the store (json columns are read as text, as asyncpg does)."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        connect=connect_database,
        init=_prefer_lz4,
        reset=_as_it_is,
    )
    assert pool is not None
    return pool


def _now() -> datetime:
    return datetime.now(UTC)


async def check_database_role(settings: Settings, check: RoleCheck) -> None:
    """Say loudly (or refuse, if required) when the role could alter the log."""
    try:
        report = await check.report()
    except (OSError, asyncpg.PostgresError) as error:
        _log.warning("could not inspect the database role's privileges: %s", error)
        return
    if report.least_privilege:
        return
    if settings.require_least_privilege:
        raise RuntimeError(warning(report))
    _log.error(warning(report))


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the database pool and Redis client and build the services; close on exit."""
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("database_url and redis_url must be set (the CLI starts embedded ones)")
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    # connects on first use: a Redis that is down must not stop the API (jobs wait in the log)
    redis = queue_connection(settings.redis_url, settings.queue_name)
    # its processes start with the first LightGBM upload: most processes opening resources
    # (workers, scorers, commands) never check one
    sandbox = LightGBMSandbox(
        settings.lightgbm_sandbox_processes,
        memory_bytes=settings.lightgbm_sandbox_memory_mb << 20,
    )
    # every view is written with its events (app/store/inline): a reader in any process sees
    # an append's effects once it committed; the projector catches up what was not
    inline = InlineProjections(all_projections(snapshot_every=settings.model_snapshot_every))
    store = EventStore(
        pool, batch_max_events=settings.append_batch_max_events, notify=True, inline=inline
    )
    try:
        database_role = RoleCheck(pool)
        await check_database_role(settings, database_role)
        signing_key = load_or_create_key(settings.signing_key_file)
        projector = Projector(store, all_projections(snapshot_every=settings.model_snapshot_every))
        inline.on_projected(projector.projected)
        governance = Governance(store, projector, _now)
        artifacts = ArtifactStore(settings.home / "artifacts")
        registry = Registry(store, _now)
        scoring = build_scoring(
            settings,
            pool=pool,
            store=store,
            projector=projector,
            policies=registry.policies,
            artifacts=artifacts,
            clock=_now,
        )
        jobs = Jobs(store, governance, artifacts)
        datasets = Datasets(store, governance)
        yield Resources(
            settings=settings,
            pool=pool,
            redis=redis,
            store=store,
            projector=projector,
            authenticator=Authenticator(
                store,
                max_stale_seconds=settings.auth_max_stale_seconds,
                poll_seconds=settings.auth_poll_seconds,
            ),
            signing_key=signing_key,
            checkpointer=Checkpointer(
                store, signing_key, Witness(settings.witness_file, settings.witness_url)
            ),
            minter=TokenMinter(private_raw(signing_key)),
            governance=governance,
            registry=registry,
            artifacts=artifacts,
            jobs=jobs,
            dispatcher=Dispatcher(store, redis, settings.queue_name),
            sweeper=Sweeper(store, jobs, projector, redis, settings),
            clock=_now,
            scoring=scoring,
            database_role=database_role,
            sandbox=sandbox,
            datasets=datasets,
            retraining=RetrainingReactor(store, governance, datasets),
        )
    finally:
        sandbox.close()
        await store.drain()  # the last append's wake-up goes out before the pool closes
        await redis.aclose(close_connection_pool=True)
        await pool.close()
