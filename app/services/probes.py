"""What readiness asks of the stores: the log's head, Redis, the database role."""

from __future__ import annotations

from arq.connections import ArqRedis

from app.store.events import EventStore
from app.store.roles import RoleCheck, RoleReport


class Probes:
    """One question a store answers, each; the caller bounds how long it waits."""

    def __init__(self, store: EventStore, redis: ArqRedis, role: RoleCheck) -> None:
        self._store = store
        self._redis = redis
        self._role = role

    async def head(self) -> int:
        """The log's head position (the database answers)."""
        head, _ = await self._store.head()
        return head

    async def redis(self) -> None:
        """Redis answers."""
        await self._redis.ping()

    async def role(self) -> RoleReport:
        """What the database role could do to the log (inspected again if that failed)."""
        return await self._role.report()
