"""Issuing tokens and authenticating requests with them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import msgspec

from app.store.events import EventStore, Idempotency
from app.store.projector import Projector
from domain.events import EventMeta, Role, TokenIssued
from domain.tokens import IssueToken, issue_token, token_stream

# A revoked token may keep working for this long in other processes' caches.
AUTH_CACHE_SECONDS = 5.0


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller: every write is attributed to one."""

    subject: str
    role: Role
    token_id: str | None = None


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A new token; the plaintext exists only in this value, never in storage."""

    token_id: str
    subject: str
    role: Role
    token: str
    position: int


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenMinter:
    """Makes tokens `mlt_<id>_<secret>` whose secret is an HMAC of the id under a server key.

    Only the sha256 of a token is stored. Deriving the secret (rather than drawing it at
    random) lets an idempotent retry of the request that issued it return the same token.
    """

    def __init__(self, server_secret: bytes) -> None:
        self._key = hashlib.sha256(b"model-ledger/token-secret/v1" + server_secret).digest()

    def token(self, token_id: str) -> str:
        """The token of an id."""
        mac = hmac.new(self._key, token_id.encode(), hashlib.sha256).digest()
        return f"mlt_{token_id}_{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def issue(
    store: EventStore,
    projector: Projector,
    minter: TokenMinter,
    command: IssueToken,
    *,
    meta: EventMeta,
    idempotency: Idempotency | None = None,
) -> IssuedToken:
    """Issue a token: append `token.issued` and wait until it authenticates."""
    token_id = secrets.token_hex(8)
    events = issue_token(
        command, token_id=token_id, token_sha256=hash_token(minter.token(token_id))
    )
    result = await store.append(
        token_stream(token_id), events, meta=meta, expected_version=0, idempotency=idempotency
    )
    if result.replayed:
        # the first request's token: same id, hence the same derived secret
        issued = (await store.read_all(result.first_position - 1, 1))[0].event
        assert isinstance(issued, TokenIssued)  # the key's digest covers method and path
        token_id = issued.token_id
    await projector.catch_up_to(result.last_position)
    return IssuedToken(
        token_id=token_id,
        subject=events[0].subject,
        role=events[0].role,
        token=minter.token(token_id),
        position=result.last_position,
    )


class Authenticator:
    """Resolves bearer tokens to principals, with a short cache off the database."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of a live token, or None."""
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self._store.pool.fetchrow(
            "SELECT subject, role, token_id FROM tokens "
            "WHERE token_sha256 = $1 AND revoked_at IS NULL",
            digest,
        )
        principal = (
            None
            if row is None
            else Principal(subject=row["subject"], role=row["role"], token_id=row["token_id"])
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        # unknown tokens are not cached: a token issued a moment ago must work at once
        if principal is not None:
            self._cache[digest] = (principal, now + AUTH_CACHE_SECONDS)
        return principal

    async def any_admin(self) -> bool:
        """True when some admin token exists (first start creates one otherwise)."""
        found: bool = await self._store.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL)"
        )
        return found
