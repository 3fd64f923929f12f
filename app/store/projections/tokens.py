"""The tokens view: which token hash authenticates whom, as what."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.store.codec import RecordedEvent
from domain.events import TokenIssued, TokenRevoked


class TokensProjection:
    """Projects `token.issued` / `token.revoked` into the `tokens` table."""

    name = "tokens"
    types = ("token.issued", "token.revoked")
    tables = ("tokens",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Insert issued tokens and mark revoked ones."""
        for recorded in events:
            event = recorded.event
            if isinstance(event, TokenIssued):
                await conn.execute(
                    "INSERT INTO tokens (token_sha256, token_id, subject, role, issued_at, "
                    "issued_by, position) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    event.token_sha256,
                    event.token_id,
                    event.subject,
                    event.role,
                    recorded.recorded_at,
                    recorded.meta.actor,
                    recorded.position,
                )
            elif isinstance(event, TokenRevoked):
                await conn.execute(
                    "UPDATE tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL",
                    event.token_id,
                    recorded.recorded_at,
                )
