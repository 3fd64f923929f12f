"""The compile job: Treelite + TL2cgen build a library, certified against the model itself.

Results are cached by artifact digest (with the certificate rows' digest and the toolchain):
a second version of the same artifact, or a retry after the library was stored, reuses the
certified library instead of compiling again.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import msgspec
import numpy as np

from app.scoring.library import ABI_VERSION
from domain import commands as cmd
from domain import events as ev
from domain.decide import require_model, require_version
from workers.ml import forest
from workers.ml.compile import (
    BATCH_SOURCE,
    COMPILE_FLAGS,
    FOREST_SOURCE,
    CompileError,
    CompileOutcome,
    compile_model,
)
from workers.runner import Context, JobInputError


class _Cached(msgspec.Struct, frozen=True, kw_only=True):
    library_sha256: str
    compiler: str
    flags: list[str]
    compile_seconds: float
    rows_checked: int
    max_abs_diff: float
    max_scaled_diff: float
    reference: str


def compile_in_child(
    artifact: str, fmt: str, workdir: str, holdout: str | None, tolerance: float
) -> CompileOutcome:
    """Runs in the process pool: generate, build and certify."""
    # allow_pickle=False: a holdout file is numbers only, never objects
    rows = None if holdout is None else np.load(holdout, allow_pickle=False)
    return compile_model(Path(artifact), fmt, Path(workdir), holdout=rows, tolerance=tolerance)


async def run(ctx: Context) -> cmd.Compiled:
    """Compile the job's version (or reuse a certified library of the same artifact)."""
    res, job = ctx.resources, ctx.job
    state, _ = await res.governance.model(job.name)
    model = require_model(job.name, state)
    assert job.version is not None
    version = require_version(model, job.version)
    policy, _ = await res.governance.policy(model.risk_tier)
    holdout = _holdout(ctx)
    tolerance = policy.parity_tolerance(version.format)
    key = _cache_key(version.artifact_sha256, version.format, holdout)
    cache = res.settings.home / "compile-cache" / f"{key}.json"
    cached = _read_cache(cache)
    if cached is None or not res.artifacts.exists(cached.library_sha256):
        cached = await _compile(ctx, version.artifact_sha256, version.format, holdout, tolerance)
        if cached.max_scaled_diff <= tolerance:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(msgspec.json.encode(cached))
    compiled = ev.VersionCompiled(
        name=job.name,
        version=job.version,
        library_sha256=cached.library_sha256,
        max_abs_diff=cached.max_abs_diff,
        rows_checked=cached.rows_checked,
        compiler=cached.compiler,
        flags=list(cached.flags),
        compile_seconds=cached.compile_seconds,
        job_id=job.job_id,
        max_scaled_diff=cached.max_scaled_diff,
        reference=cached.reference,
    )
    return cmd.Compiled(library=compiled)


async def _compile(
    ctx: Context, artifact_sha256: str, fmt: str, holdout: Path | None, tolerance: float
) -> _Cached:
    res = ctx.resources
    artifact = res.artifacts.path_of(artifact_sha256)
    workdir = res.settings.home / "work" / f"{ctx.job.job_id}-{ctx.attempt}"
    try:
        outcome = await _build(
            ctx,
            str(artifact),
            fmt,
            str(workdir),
            None if holdout is None else str(holdout),
            tolerance,
        )
        library = await asyncio.to_thread(Path(outcome.library_path).read_bytes)
        stored = await res.artifacts.put_bytes(library)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _Cached(
        library_sha256=stored.sha256,
        compiler=outcome.compiler,
        flags=outcome.flags,
        compile_seconds=round(outcome.compile_seconds, 3),
        rows_checked=outcome.certificate.rows_checked,
        max_abs_diff=outcome.certificate.max_abs_diff,
        max_scaled_diff=outcome.certificate.max_scaled_diff,
        reference=outcome.certificate.reference,
    )


async def _build(ctx: Context, *args: object) -> CompileOutcome:
    try:
        return await ctx.pool.run(
            ctx.resources.settings.job_timeout_seconds, compile_in_child, *args
        )
    except CompileError as error:  # the same model fails the same way: no retry
        raise JobInputError(str(error)) from error


def _holdout(ctx: Context) -> Path | None:
    digest = ctx.job.params.get("holdout_sha256")
    if digest is None:
        return None
    if not isinstance(digest, str) or not ctx.resources.artifacts.exists(digest):
        raise JobInputError(f"no stored holdout rows {digest!r}")
    return ctx.resources.artifacts.path_of(digest)


def _cache_key(artifact_sha256: str, fmt: str, holdout: Path | None) -> str:
    """The artifact, and everything that changes the library built from it."""
    toolchain = "|".join(
        [
            str(shutil.which("cc")),
            " ".join(COMPILE_FLAGS),
            fmt,
            str(holdout and holdout.name),
            hashlib.sha256(BATCH_SOURCE.read_bytes()).hexdigest(),
            hashlib.sha256(FOREST_SOURCE.read_bytes()).hexdigest(),
            hashlib.sha256(Path(forest.__file__).read_bytes()).hexdigest(),
            str(ABI_VERSION),
            version("tl2cgen"),
            version("treelite"),
            # the reference a certificate compares with (cached certificates name it)
            _installed("xgboost-cpu") if fmt == "xgboost-json" else "",
            "certificate-2",
        ]
    )
    return f"{artifact_sha256}-{hashlib.sha256(toolchain.encode()).hexdigest()[:16]}"


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "absent"


def _read_cache(path: Path) -> _Cached | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Cached)
    except (OSError, msgspec.DecodeError):
        return None
