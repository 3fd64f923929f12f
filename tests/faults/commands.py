"""One-shot commands run to completion as real processes (`model-ledger verify`, `export`,
`checkpoint`, the independent verifier), a few at a time."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.faults.harness import CLI

T = TypeVar("T")
INDEPENDENT_VERIFIER = Path(__file__).resolve().parents[1] / "store" / "independent_verifier.py"


@dataclass(frozen=True)
class Finished:
    """A command's exit status and output."""

    args: tuple[str, ...]
    status: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{' '.join(self.args)} -> {self.status}\n{self.stdout}\n{self.stderr}"


async def run(args: list[str], env: dict[str, str], seconds: float = 120.0) -> Finished:
    """Run `args` (the first is the program) with `env` over a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
    process = await asyncio.create_subprocess_exec(
        *args,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{args} still running after {seconds} s") from None
    assert process.returncode is not None
    return Finished(tuple(args), process.returncode, out.decode(), err.decode())


async def model_ledger(*args: str, env: dict[str, str]) -> Finished:
    """`model-ledger ARGS...` with the stack's environment."""
    return await run([CLI, *args], env)


async def independent_verify(bundle: Path, public_key: str) -> Finished:
    """The stdlib-only verifier written from docs/audit-format.md, as a script."""
    return await run(
        [sys.executable, "-I", str(INDEPENDENT_VERIFIER), str(bundle), "--public-key", public_key],
        {},
    )


async def bounded(jobs: list[Coroutine[Any, Any, T]], limit: int = 3) -> list[T]:
    """Await coroutines `limit` at a time (the machine has two cores); results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))
