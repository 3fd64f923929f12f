"""Console sessions, kept in this process's memory: a random id in the cookie, the rest here.

A session holds the stored form of the token it was opened with (its SHA-256, never the
token), so a revoked token ends its sessions at their next request. Sessions end after
`idle_seconds` without a request and `max_seconds` after sign-in, whichever comes first;
a restart ends them all (sign in again). Behind several API processes, route a browser to
one process (sticky sessions): another process does not know its session.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.services.authenticator import Principal

IDLE_SECONDS = 30 * 60.0
MAX_SECONDS = 8 * 3600.0
# beyond this many, the oldest sessions are dropped first (a bound on memory)
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    principal: Principal
    token_digest: str
    csrf_token: str
    opened_at: float
    seen_at: float


class Sessions:
    """Open console sessions by id; `clock` is monotonic seconds (tests replace it)."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._open: dict[str, Session] = {}

    def open(self, principal: Principal, token_digest: str) -> tuple[str, Session]:
        """A new session for a verified token: its id (the cookie's value) and itself."""
        now = self.clock()
        self._sweep(now)
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, token_digest, secrets.token_urlsafe(32), now, now)
        self._open[session_id] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of this id (its idle time restarts), or None."""
        session = self._open.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._open[session_id]
            return None
        session.seen_at = now
        return session

    def close(self, session_id: str) -> None:
        """End a session (sign-out)."""
        self._open.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._open)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.seen_at > self.idle_seconds or now - session.opened_at > self.max_seconds
        )

    def _sweep(self, now: float) -> None:
        for session_id, session in list(self._open.items()):
            if self._expired(session, now):
                del self._open[session_id]
        while len(self._open) >= MAX_SESSIONS:  # dicts keep insertion order: oldest first
            del self._open[next(iter(self._open))]
