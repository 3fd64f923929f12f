"""Issuing, revoking and listing tokens (authentication itself: `app.services.authenticator`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import msgspec

from app.services.authenticator import Authenticator, Principal, hash_token
from app.store.codec import RecordedEvent
from app.store.events import EventStore, Idempotency
from app.store.projector import Projector
from domain.errors import NotFound
from domain.events import EventMeta, Role, TokenIssued, TokenRevoked
from domain.subjects import subject_key
from domain.tokens import IssueToken, fold_token, issue_token, revoke_token, token_stream

__all__ = ["Authenticator", "Principal", "hash_token"]

# Revocations of admin tokens take turns on this (transaction-scoped) advisory lock, in
# every process: two admins revoking each other's tokens at once must not both see the
# other token live and leave none.
_REVOCATIONS_LOCK = 0x6D6C_746F_6B72  # "mltokr"
# ids are 16 hex digits; anything that could not be one is unknown without a look-up
_TOKEN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_LIST_SQL = (
    "SELECT t.token_id, t.subject, t.role, t.issued_at, t.issued_by, t.position, "
    "t.revoked_at, r.position AS revoked_position, r.meta::json->>'actor' AS revoked_by, "
    "r.data::json->>'reason' AS revoked_reason "
    "FROM tokens t LEFT JOIN events r "
    "ON r.stream = 'token-' || t.token_id AND r.type = 'token.revoked' "
    "ORDER BY t.position"
)


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A new token; the plaintext exists only in this value, never in storage."""

    token_id: str
    subject: str
    role: Role
    token: str
    position: int


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """A token's revocation as recorded (the first one, however often it was asked for)."""

    token_id: str
    subject: str
    role: Role
    reason: str
    revoked_by: str
    revoked_at: datetime
    position: int
    # False when the token had already been revoked: nothing was appended this time
    revoked_now: bool


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What an admin may see of a token: never the token or its hash."""

    token_id: str
    subject: str
    role: Role
    issued_at: datetime
    issued_by: str
    position: int
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None
    revoked_position: int | None = None


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
    """Issue a token: append `token.issued` and wait until it authenticates.

    The token works at once in this process (its table reads the log again when it meets
    an unknown token after an append here) and within a second in the others.
    """
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


async def revoke(
    store: EventStore,
    projector: Projector,
    table: Authenticator,
    token_id: str,
    *,
    reason: str,
    meta: EventMeta,
    idempotency: Idempotency | None = None,
) -> Revocation:
    """Revoke a token: append `token.revoked` once; it stops authenticating here before
    this returns, elsewhere within the table's refresh (about a second).

    Revoking a revoked token answers its first revocation and appends nothing. The last
    live admin token is never revoked (LastAdminToken).
    """
    if not _TOKEN_ID.match(token_id):
        raise NotFound(f"no token {token_id!r}")
    if idempotency is not None:
        await store.replayed(idempotency)  # IdempotencyKeyReused for another request
    stream = token_stream(token_id)
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _REVOCATIONS_LOCK)
        recorded = await store.read_stream(stream)
        await table.sync()  # every revocation before the lock was taken is counted
        events = revoke_token(
            fold_token(r.event for r in recorded),
            token_id,
            reason=reason.strip(),
            live_admin_tokens=table.live_admin_tokens(),
        )
        if events:
            await store.append(
                stream, events, meta=meta, expected_version=len(recorded), idempotency=idempotency
            )
            recorded = await store.read_stream(stream)
    await table.sync()
    revocation = _revocation(recorded, revoked_now=bool(events))
    await projector.catch_up_to(revocation.position)
    return revocation


def _revocation(recorded: list[RecordedEvent], *, revoked_now: bool) -> Revocation:
    facts = fold_token(r.event for r in recorded)
    revoked = next(r for r in recorded if isinstance(r.event, TokenRevoked))
    assert facts is not None
    assert isinstance(revoked.event, TokenRevoked)
    return Revocation(
        token_id=facts.token_id,
        subject=facts.subject,
        role=facts.role,
        reason=revoked.event.reason,
        revoked_by=revoked.meta.actor,
        revoked_at=revoked.recorded_at,
        position=revoked.position,
        revoked_now=revoked_now,
    )


async def list_tokens(
    store: EventStore, *, subject: str | None = None, role: str | None = None
) -> list[TokenInfo]:
    """Every token ever issued (optionally of one subject or role), in issuing order."""
    rows = await store.pool.fetch(_LIST_SQL)
    wanted = None if subject is None else subject_key(subject)
    return [
        TokenInfo(**{**dict(row), "subject": subject_key(row["subject"])})
        for row in rows
        if (wanted is None or subject_key(row["subject"]) == wanted)
        and (role is None or row["role"] == role)
    ]


class Tokens:
    """Issuing, listing and revoking tokens, for the token routes."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        minter: TokenMinter,
        authenticator: Authenticator,
    ) -> None:
        self._store = store
        self._projector = projector
        self._minter = minter
        self._authenticator = authenticator

    async def issue(
        self, command: IssueToken, *, meta: EventMeta, idempotency: Idempotency | None
    ) -> IssuedToken:
        """Issue a token (see `issue`)."""
        return await issue(
            self._store, self._projector, self._minter, command, meta=meta, idempotency=idempotency
        )

    async def listed(self, *, subject: str | None, role: str | None) -> list[TokenInfo]:
        """Every token ever issued, optionally of one subject or role (see `list_tokens`)."""
        return await list_tokens(self._store, subject=subject, role=role)

    async def revoke(
        self, token_id: str, *, reason: str, meta: EventMeta, idempotency: Idempotency | None
    ) -> Revocation:
        """Revoke a token (see `revoke`)."""
        return await revoke(
            self._store,
            self._projector,
            self._authenticator,
            token_id,
            reason=reason,
            meta=meta,
            idempotency=idempotency,
        )
