"""What the command line does, as async functions over the configured stores."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from app.resources import open_resources
from app.services import tokens
from app.services.audit import Head, VerifyReport, verify_log
from app.services.export import export_log
from app.settings import Settings
from app.store.checkpoints import Checkpoint, newest_checkpoint
from domain.decide import model_stream
from domain.events import EventMeta
from domain.tokens import IssueToken


async def create_token(
    settings: Settings, *, subject: str, role: str, actor: str
) -> tokens.IssuedToken:
    """Issue a token as an operator with direct database access."""
    async with open_resources(settings) as resources:
        await resources.projector.catch_up()
        return await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject=subject, role=role),
            meta=EventMeta(actor=actor, role="admin"),
        )


async def revoke_token(
    settings: Settings, token_id: str, *, reason: str, actor: str
) -> tokens.Revocation:
    """Revoke a token as an operator with direct database access (audited as `actor`)."""
    async with open_resources(settings) as resources:
        return await tokens.revoke(
            resources.store,
            resources.projector,
            resources.authenticator,
            token_id,
            reason=reason,
            meta=EventMeta(actor=actor, role="admin"),
        )


async def list_tokens(
    settings: Settings, *, subject: str | None, role: str | None
) -> list[tokens.TokenInfo]:
    """Every token issued (never a secret), optionally of one subject or role."""
    async with open_resources(settings) as resources:
        await resources.projector.catch_up()
        return await tokens.list_tokens(resources.store, subject=subject, role=role)


async def ensure_admin_token(settings: Settings) -> str | None:
    """On first start, issue an admin token and write it to `<home>/admin.token` (0600).

    Returns the new token, or None when an admin token already exists.
    """
    path = settings.admin_token_file
    async with open_resources(settings) as resources:
        await resources.projector.catch_up()
        if path.exists() or await resources.authenticator.any_admin():
            return None
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject="admin", role="admin"),
            meta=EventMeta(actor="model-ledger:first-start", role="admin"),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    return issued.token


async def verify_database(
    settings: Settings, *, expect_head: Head | None = None, witness: Path | None = None
) -> VerifyReport:
    """Verify the configured database's chain and checkpoints, against the witness file
    (`witness`, else the configured one, when it exists) and an expected head."""
    async with open_resources(settings) as resources:
        return await verify_log(
            resources.store,
            resources.signing_key.public_key(),
            witness_file=witness or settings.witness_file,
            expect_head=expect_head,
        )


async def sign_checkpoint(settings: Settings) -> tuple[Checkpoint | None, bool]:
    """Sign the head now if it moved; the newest checkpoint, and whether it is new."""
    async with open_resources(settings) as resources:
        signed = await resources.checkpointer.sign_head()
        await resources.checkpointer.drain()
        if signed is not None:
            return signed, True
        return await newest_checkpoint(resources.store), False


async def export_bundle(settings: Settings, out: Path, model: str | None = None) -> int:
    """Export the log (or one model's events, others as chain links) up to a fresh checkpoint."""
    async with open_resources(settings) as resources:
        if model is not None:
            await resources.registry.model_state(model)  # NotFound for an unknown name
        await resources.checkpointer.sign_head()
        await resources.checkpointer.drain()
        stream = None if model is None else model_stream(model)
        with out.open("wb") as handle:
            return await export_log(
                resources.store,
                handle,
                resources.signing_key,
                in_scope=None if stream is None else stream.__eq__,
                scope="all" if model is None else f"model:{model}",
            )


async def rebuild_projections(settings: Settings) -> int:
    """Rebuild every view from position 0."""
    async with open_resources(settings) as resources:
        return await resources.projector.rebuild()


def openapi_document() -> bytes:
    """The app's OpenAPI document as formatted JSON with sorted keys (stable diffs)."""
    from app.main import create_app  # noqa: PLC0415

    app = create_app(Settings())
    schema = app.openapi_schema.to_schema()
    return msgspec.json.format(msgspec.json.encode(schema, order="sorted"), indent=2) + b"\n"
