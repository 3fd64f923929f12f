"""A stack of a fault test's own: PostgreSQL, Redis and a data folder it may break."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app.store.roles import APP_ROLE, OWNER_ROLE, ensure_roles
from tests.faults.harness import Postgres, Process, Redis, scratch

DATABASE = "ledger"


@dataclass
class Stack:
    """A PostgreSQL, a Redis and a data folder, all the test's own."""

    folder: Path
    postgres: Postgres
    redis: Redis
    queue: str
    processes: list[Process]

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def database_url(self) -> str:
        """The application role's URL, as every process but `migrate` connects."""
        return self.postgres.url(DATABASE, user=APP_ROLE)

    @property
    def superuser_url(self) -> str:
        """The server's superuser: what a tampering insider holds."""
        return self.postgres.url(DATABASE)

    def env(self, **extra: str) -> dict[str, str]:
        """What a `model-ledger` process of this stack is configured with."""
        return {
            "MODEL_LEDGER_HOME": str(self.home),
            "MODEL_LEDGER_DATABASE_URL": self.database_url,
            "MODEL_LEDGER_MIGRATION_DATABASE_URL": self.postgres.url(DATABASE, user=OWNER_ROLE),
            "MODEL_LEDGER_REDIS_URL": self.redis.url,
            "MODEL_LEDGER_QUEUE_NAME": self.queue,
            **extra,
        }

    def start(self, *args: str, **env: str) -> Process:
        """A `model-ledger` command on this stack; it is killed when the test ends."""
        process = Process(list(args), self.env(**env))
        self.processes.append(process)
        return process

    def admin_headers(self) -> dict[str, str]:
        token = (self.home / "admin.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def private_stack() -> AsyncIterator[Stack]:
    """Start a stack; on exit kill its processes and stop its servers."""
    with scratch() as folder:
        postgres, redis = Postgres(folder), Redis(folder, durable=True)
        postgres.start()
        redis.start()
        created = Stack(folder, postgres, redis, f"faults:{uuid.uuid4().hex[:8]}", [])
        try:
            conn = await asyncpg.connect(postgres.url())
            try:
                await ensure_roles(conn)
                await conn.execute(f'CREATE DATABASE "{DATABASE}" OWNER {OWNER_ROLE}')
            finally:
                await conn.close()
            yield created
        finally:
            for process in created.processes:
                process.close()
            redis.kill()
            postgres.stop()
