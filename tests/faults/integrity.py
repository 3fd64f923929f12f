"""Tampering by a superuser with the log a real server wrote and signed, verified by the
`model-ledger verify` command on a copy of the database per case.

The server is stopped first: a database is copied (`CREATE DATABASE ... TEMPLATE`) only
while no session is connected to it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app.store.roles import APP_ROLE, OWNER_ROLE
from tests.faults import story
from tests.faults.commands import Finished, bounded, model_ledger
from tests.faults.stack import DATABASE, Stack
from tests.faults.tampering import CASES, PINNED, WITNESS, Expect, Layout, cloned, read_layout

# the server signs only when told to (and at start and stop): checkpoints fall where the
# story puts them
QUIET_SIGNER = {"MODEL_LEDGER_CHECKPOINT_INTERVAL_SECONDS": "3600"}


@dataclass(frozen=True)
class Verification:
    """One `model-ledger verify` of one tampered copy."""

    case: str
    how: str
    detectable: bool
    ok: bool
    position: int | None
    expected_position: int | None
    problem: str | None
    unchecked: tuple[str, ...]
    says: str

    @property
    def detected(self) -> bool:
        return self.detectable and not self.ok

    @property
    def located(self) -> bool:
        """Failed at the position the trust model names, saying why."""
        return (
            self.detected
            and self.position == self.expected_position
            and self.says in (self.problem or "")
        )

    @property
    def honest(self) -> bool:
        """An undetectable change (or none) passes, the report saying what it left unchecked."""
        return not self.detectable and self.ok and self.says in " ".join(self.unchecked)


@dataclass(frozen=True)
class TamperOutcome:
    """What the tampering cases showed: verifications that had to fail, how many did and
    at the right position, and the ones that had to pass."""

    events: int
    checkpoints: int
    cases: int
    verifications: tuple[Verification, ...]

    @property
    def tried(self) -> int:
        return sum(v.detectable for v in self.verifications)

    @property
    def detected(self) -> int:
        return sum(v.detected for v in self.verifications)

    @property
    def located(self) -> int:
        return sum(v.located for v in self.verifications)

    @property
    def must_pass(self) -> int:
        return sum(not v.detectable for v in self.verifications)

    @property
    def passed_honestly(self) -> int:
        return sum(v.honest for v in self.verifications)


async def checkpoint(stack: Stack) -> str:
    """`model-ledger checkpoint`: the head it signed and printed, POSITION:HASH."""
    done = await model_ledger("checkpoint", env=stack.env())
    assert done.status == 0, str(done)
    return done.stdout.strip()


async def tell_story(client: httpx.AsyncClient, stack: Stack) -> str:
    """Models, versions the worker compiles, approvals, promotions, drift alerts and a
    retirement, a checkpoint signed after each chapter; the last head signed."""
    cast = await story.cast(client, "story", 3)
    first, second, third = cast.models
    ann, bob = cast.approvers
    versions = [(first, 0), (first, 1), (second, 2), (third, 3)]
    registered = [
        (name, await story.register_version(client, cast.ci, name, seed)) for name, seed in versions
    ]
    await story.until_compiled(client, registered)
    await checkpoint(stack)
    await story.approve(client, ann, first, 1, "approve")
    await story.approve(client, bob, first, 2, "reject")
    await story.approve(client, bob, second, 1, "approve")
    await story.promote(client, cast.ci, first, 1, "production")
    await story.promote(client, cast.ci, second, 1, "staging")
    await checkpoint(stack)
    await story.drift_alerts(client, cast.ci, first, 1, 15)
    await checkpoint(stack)
    await story.drift_alerts(client, cast.ci, second, 1, 10)
    await story.retire(client, cast.ci, third, 1)
    return await checkpoint(stack)


async def written_and_signed(stack: Stack) -> str:
    """A real server writes the story and is stopped; the head pinned at its end."""
    api = stack.start("serve", "--worker", "--port", "0", **QUIET_SIGNER)
    url = api.listening()
    async with httpx.AsyncClient(base_url=url, headers=stack.admin_headers(), timeout=60) as client:
        pin = await tell_story(client, stack)
    assert api.stop() == 0, api.text()
    return pin


async def _sessions_on(superuser_url: str, database: str) -> int:
    conn = await asyncpg.connect(superuser_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
        )
    finally:
        await conn.close()


def _home_copy(stack: Stack, into: Path, *, witnessed: bool) -> Path:
    """The server's data folder as an auditor copies it (signing key, witness file or not)."""
    skipped = () if witnessed else ("witness.jsonl",)
    shutil.copytree(stack.home, into, ignore=shutil.ignore_patterns("artifacts", *skipped))
    return into


async def _verify(
    stack: Stack, case: str, clone: str, expect: Expect, pin: str, home: Path
) -> Verification:
    args = ["verify", *(["--expect-head", pin] if expect.how == PINNED else [])]
    env = stack.env(
        MODEL_LEDGER_HOME=str(home),
        MODEL_LEDGER_DATABASE_URL=stack.postgres.url(clone, user=APP_ROLE),
        MODEL_LEDGER_MIGRATION_DATABASE_URL=stack.postgres.url(clone, user=OWNER_ROLE),
    )
    done: Finished = await model_ledger(*args, env=env)
    assert done.status in (0, 1), str(done)
    report = json.loads(done.stdout)
    assert report["ok"] == (done.status == 0), str(done)
    return Verification(
        case=case,
        how=expect.how,
        detectable=expect.detectable,
        ok=report["ok"],
        position=report["first_broken_position"],
        expected_position=expect.position,
        problem=report["problem"],
        unchecked=tuple(report["unchecked"]),
        says=expect.says,
    )


async def tampering_by_a_superuser(stack: Stack, pin: str | None = None) -> TamperOutcome:
    """Every case of tampering.CASES on its own copy of the stopped log, then verified.

    `pin`: the head `written_and_signed` returned on this stack (else it is called here)."""
    pin = pin or await written_and_signed(stack)
    server = stack.postgres.url()
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        layout: Layout = await read_layout(conn)
    finally:
        await conn.close()
    # nothing was appended after the pin: the newest checkpoint signed it
    assert pin.startswith(f"{layout.head}:") and layout.checkpoints[-1][1] == layout.head
    await _until_no_sessions(server)
    verifications = []
    for number, (case, tamper) in enumerate(CASES.items()):
        clone = f"tampered_{number}"
        async with cloned(server, clone):
            conn = await asyncpg.connect(stack.postgres.url(clone))
            try:
                expects = await tamper(conn, layout)
            finally:
                await conn.close()
        for n, expect in enumerate(expects):
            home = _home_copy(stack, stack.folder / f"{clone}-{n}", witnessed=expect.how == WITNESS)
            verifications.append(_verify(stack, case, clone, expect, pin, home))
    return TamperOutcome(
        events=layout.head,
        checkpoints=len(layout.checkpoints),
        cases=len(CASES),
        verifications=tuple(await bounded(verifications)),
    )


async def _until_no_sessions(superuser_url: str, seconds: float = 30.0) -> None:
    """The stopped server's backends may take a moment to leave."""
    deadline = time.monotonic() + seconds
    while await _sessions_on(superuser_url, DATABASE):
        assert time.monotonic() < deadline, "sessions stay connected to the stopped ledger"
        await asyncio.sleep(0.05)
