"""Authentication from an in-memory token table: no database round trip per request.

Each process keeps every token's hash, subject and role in memory, read from the log's
`token.issued` / `token.revoked` events. It is kept current by the log watcher (every append
here wakes it directly, appends elsewhere by LISTEN/NOTIFY) and by a poll of at most
`poll_seconds` as the safety net, so a revocation anywhere stops a token everywhere within
about a second; `revoke` in this process updates the table before it answers.

While the database is away the table keeps authenticating with the tokens it knows, for at
most `max_stale_seconds` after its last successful read; past that it refuses every
request (`TokensStale`, a 503): a revocation it cannot see may have happened meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from prometheus_client import Gauge

from app.outages import is_outage
from app.store.codec import decode_event
from app.store.events import EventStore
from app.store.watch import Subscription
from domain.events import Role, TokenIssued, TokenRevoked
from domain.subjects import subject_key

_log = logging.getLogger("model_ledger.auth")

TOKEN_EVENT_TYPES = ["token.issued", "token.revoked"]
# One statement, so one snapshot: the head it reports and the token events up to it.
# Positions become visible in order, so nothing at or below that head can appear later.
_SINCE_SQL = (
    "WITH head AS (SELECT coalesce(max(position), 0) AS position FROM events) "
    "SELECT head.position, e.data::text FROM head LEFT JOIN events e "
    "ON e.position > $1 AND e.position <= head.position AND e.type = ANY($2::text[]) "
    "ORDER BY e.position"
)
# a sync made on behalf of a request gives up after this long (the request then fails alone)
_REQUEST_SYNC_SECONDS = 1.0
# the follower's read gives up after this long (a database that does not answer)
_FOLLOW_SYNC_SECONDS = 5.0
# the follower reads at most this often however fast the log grows
_MIN_SYNC_INTERVAL = 0.05


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller: every write is attributed to one."""

    subject: str
    role: Role
    token_id: str | None = None


class TokensStale(Exception):
    """The token table was last read longer ago than allowed: authentication is refused."""


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class _Known:
    digest: str
    principal: Principal
    revoked: bool = False


class Authenticator:
    """Resolves bearer tokens to principals from the process's token table."""

    def __init__(
        self,
        store: EventStore,
        *,
        max_stale_seconds: float = 300.0,
        poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_stale = max_stale_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._live: dict[str, Principal] = {}  # sha256 of a live token -> its principal
        self._known: dict[str, _Known] = {}  # token id -> its facts, revoked ones included
        self._position = 0  # the log is read up to here
        self._read_at: float | None = None  # when the latest successful read began
        self._appended_here = 0  # the head of this process's own appends
        self._syncing = asyncio.Lock()
        store.on_append(self._on_local_append)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of a live token, or None; TokensStale when the table is too old."""
        if self._read_at is None:  # not loaded at start (a command, a test): load now
            try:
                await self.sync()
            except Exception as error:
                if not is_outage(error):
                    raise
                raise TokensStale(f"the token table cannot be read: {error}") from error
        self.check_fresh()
        digest = hash_token(token)
        principal = self._live.get(digest)
        if principal is None and self._appended_here > self._position:
            # this process appended since the table was read, perhaps the token it just issued
            try:
                async with asyncio.timeout(_REQUEST_SYNC_SECONDS):
                    await self.sync()
            except Exception as error:
                if not is_outage(error):
                    raise
            principal = self._live.get(digest)
        return principal

    def principal_of(self, digest: str) -> Principal | None:
        """The principal of a live token given its stored form (a console session keeps only
        that); None once revoked. TokensStale when the table is too old."""
        self.check_fresh()
        return self._live.get(digest)

    async def sync(self) -> int:
        """Read the token events appended since the last read; the position reached."""
        async with self._syncing:
            began = self._clock()
            rows = await self._store.pool.fetch(_SINCE_SQL, self._position, TOKEN_EVENT_TYPES)
            for row in rows:
                if row[1] is not None:
                    self._apply(decode_event(row[1]))
            self._position = max(self._position, rows[0][0])
            self._read_at = began
            return self._position

    async def follow(self, subscription: Subscription) -> None:
        """Keep the table current: whenever the log grows, and every `poll_seconds`."""
        age, live = _gauges()
        age.set_function(lambda: self.age_seconds() or 0.0)
        live.set_function(lambda: float(self.live_tokens))
        failing = False
        while True:
            await subscription.wait(self.poll_seconds)
            try:
                async with asyncio.timeout(_FOLLOW_SYNC_SECONDS):
                    await self.sync()
            except Exception as error:
                if not failing:
                    _log.warning("token table not refreshed, serving what it knows: %s", error)
                failing = True
            else:
                if failing:
                    _log.warning("token table refreshed again")
                failing = False
            await asyncio.sleep(_MIN_SYNC_INTERVAL)

    async def any_admin(self) -> bool:
        """True when some admin token is live in the database (first start creates one)."""
        found: bool = await self._store.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL)"
        )
        return found

    def live_admin_tokens(self) -> int:
        """How many admin tokens the table holds that are not revoked."""
        return sum(1 for p in self._live.values() if p.role == "admin")

    def age_seconds(self) -> float | None:
        """How long ago the latest successful read of the table began (None: never)."""
        return None if self._read_at is None else self._clock() - self._read_at

    @property
    def live_tokens(self) -> int:
        """How many tokens authenticate now."""
        return len(self._live)

    @property
    def position(self) -> int:
        """The log position the table was read up to."""
        return self._position

    def check_fresh(self) -> None:
        """Raise TokensStale when the table is older than the bound."""
        age = self.age_seconds()
        if age is not None and age > self._max_stale:
            raise TokensStale(
                f"the token table could not be read from the database for {age:.0f} s "
                f"(limit {self._max_stale:g} s): a token may have been revoked meanwhile"
            )

    def _apply(self, event: object) -> None:
        if isinstance(event, TokenIssued):
            principal = Principal(
                subject=subject_key(event.subject), role=event.role, token_id=event.token_id
            )
            self._known[event.token_id] = _Known(event.token_sha256, principal)
            self._live[event.token_sha256] = principal
        elif isinstance(event, TokenRevoked):
            known = self._known.get(event.token_id)
            if known is not None:
                known.revoked = True
                self._live.pop(known.digest, None)

    def _on_local_append(self, head: int) -> None:
        self._appended_here = max(self._appended_here, head)


@functools.cache
def _gauges() -> tuple[Gauge, Gauge]:
    """The process's token-table gauges (one registration per process)."""
    return (
        Gauge(
            "model_ledger_auth_tokens_age_seconds",
            "Seconds since the token table was last read from the database "
            "(requests are refused past auth_max_stale_seconds)",
        ),
        Gauge("model_ledger_auth_tokens_live", "Tokens the token table authenticates"),
    )
