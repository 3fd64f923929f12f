"""What every job kind reads: the model and version it is about, the policy in force,
stored artifacts and datasets; and how it stores what it produces."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from domain.decide import require_model, require_version
from domain.policy import Policy
from domain.state import ModelState, VersionState
from workers.runner import Context, JobInputError


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """The model a job is about, the policy of its tier and that policy's version."""

    model: ModelState
    policy: Policy
    policy_version: int


async def subject(ctx: Context) -> Subject:
    """The job's model as it is now, with its tier's policy."""
    state, _ = await ctx.resources.governance.model(ctx.job.name)
    model = require_model(ctx.job.name, state)
    policy, version = await ctx.resources.governance.policy(model.risk_tier)
    return Subject(model=model, policy=policy, policy_version=version)


def version_of(ctx: Context, found: Subject, number: int | None = None) -> VersionState:
    """The version the job names (or `number`)."""
    chosen = ctx.job.version if number is None else number
    if chosen is None:
        raise JobInputError(f"a {ctx.job.kind} job needs a version")
    return require_version(found.model, chosen)


def stored(ctx: Context, digest: object, what: str) -> Path:
    """The file of a stored artifact or dataset the job's parameters name."""
    if not isinstance(digest, str) or not ctx.resources.artifacts.exists(digest):
        raise JobInputError(f"no stored {what} {digest!r}")
    return ctx.resources.artifacts.path_of(digest)


async def put(ctx: Context, data: bytes) -> str:
    """Store bytes content-addressed; their sha256."""
    return (await ctx.resources.artifacts.put_bytes(data)).sha256


async def put_matrix(ctx: Context, matrix: npt.NDArray[np.float64]) -> str:
    """Store a float matrix as .npy (read back with allow_pickle=False)."""

    def encode() -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, matrix, allow_pickle=False)
        return buffer.getvalue()

    return await put(ctx, await asyncio.to_thread(encode))


def categories(version: VersionState) -> dict[str, list[str]]:
    """The category lists a trained version encodes its text features with (code = index)."""
    found = version.params.get("categories")
    return dict(found) if isinstance(found, dict) else {}
