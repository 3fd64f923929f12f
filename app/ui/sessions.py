"""Console sessions, kept in PostgreSQL so that every API process knows every session.

The cookie carries a random id; the table keeps only its SHA-256 (a copy of the table does not
sign anyone in), the stored form of the token the session was opened with (its SHA-256, never
the token), the session's CSRF token and two instants. A revoked token ends its sessions at
their next request (the middleware asks the authenticator, then deletes them). Sessions end
after `idle_seconds` without a request and `max_seconds` after sign-in, whichever comes first;
expired rows are swept whenever a session opens. The idle time restarts at most once per
`touch_seconds` (a write per request would be the price otherwise), so a session may end up to
that much earlier than `idle_seconds` after its last request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

IDLE_SECONDS = 30 * 60.0
MAX_SECONDS = 8 * 3600.0
# the idle time is restarted at most this often (bounded by a tenth of the idle time)
TOUCH_SECONDS = 60.0

_OPEN = """
INSERT INTO console_sessions (session_sha256, token_sha256, csrf_token, opened_at, seen_at)
VALUES ($1, $2, $3, $4, $4)
"""
_SWEEP = "DELETE FROM console_sessions WHERE seen_at < $1 OR opened_at < $2"
_GET = """
SELECT token_sha256, csrf_token, opened_at, seen_at FROM console_sessions
WHERE session_sha256 = $1
"""
_TOUCH = "UPDATE console_sessions SET seen_at = $2 WHERE session_sha256 = $1"
_CLOSE = "DELETE FROM console_sessions WHERE session_sha256 = $1"
_CLOSE_ALL_OF = "DELETE FROM console_sessions WHERE token_sha256 = $1"
_COUNT = "SELECT count(*) FROM console_sessions"


@dataclass(slots=True, frozen=True)
class Session:
    token_digest: str
    csrf_token: str
    opened_at: float
    seen_at: float


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Sessions:
    """Open console sessions, by id, in the database of `pool`; `clock` is wall-clock seconds
    since the epoch (tests replace it)."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock

    @property
    def touch_seconds(self) -> float:
        return min(TOUCH_SECONDS, self.idle_seconds / 10)

    async def open(self, pool: asyncpg.Pool, token_digest: str) -> tuple[str, Session]:
        """A new session for a verified token: its id (the cookie's value) and itself."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(token_digest, secrets.token_urlsafe(32), now, now)
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                _SWEEP, _instant(now - self.idle_seconds), _instant(now - self.max_seconds)
            )
            await connection.execute(
                _OPEN, _digest(session_id), token_digest, session.csrf_token, _instant(now)
            )
        return session_id, session

    async def get(self, pool: asyncpg.Pool, session_id: str) -> Session | None:
        """The live session of this id (its idle time restarts), or None."""
        if not session_id:
            return None
        key = _digest(session_id)
        row = await pool.fetchrow(_GET, key)
        if row is None:
            return None
        now = self.clock()
        opened, seen = row["opened_at"].timestamp(), row["seen_at"].timestamp()
        if now - seen > self.idle_seconds or now - opened > self.max_seconds:
            await pool.execute(_CLOSE, key)
            return None
        if now - seen >= self.touch_seconds:
            await pool.execute(_TOUCH, key, _instant(now))
            seen = now
        return Session(row["token_sha256"], row["csrf_token"], opened, seen)

    async def close(self, pool: asyncpg.Pool, session_id: str) -> None:
        """End a session (sign-out)."""
        if session_id:
            await pool.execute(_CLOSE, _digest(session_id))

    async def close_token(self, pool: asyncpg.Pool, token_digest: str) -> None:
        """End every session opened with a token (it was revoked)."""
        await pool.execute(_CLOSE_ALL_OF, token_digest)

    async def count(self, pool: asyncpg.Pool) -> int:
        """How many sessions are stored (live or not yet swept)."""
        found: int = await pool.fetchval(_COUNT)
        return found
