"""A superuser tampering with the log past its triggers: what verification finds, with the
witness file, with an expected head, and (honestly) what the database alone cannot find."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.resources import Resources
from app.services.audit import NO_WITNESS, Head, VerifyReport, verify_log
from app.store.checkpoints import CheckpointRefused, list_checkpoints
from domain.chain import canonical_bytes, link_hash
from domain.events import EventMeta, TokenRevoked
from tests.conftest import superuser

META = EventMeta(actor="tester", role="admin")


async def fill(resources: Resources, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await resources.store.append(
            f"s-{n % 3}",
            [TokenRevoked(token_id=f"t{n}", reason=f"r{n}")],
            meta=META,
            expected_version=None,
        )


def refusals() -> float:
    sample = REGISTRY.get_sample_value("model_ledger_checkpoints_total", {"outcome": "refused"})
    return sample or 0.0


@pytest.fixture
async def chained(resources: Resources) -> Resources:
    """20 events; checkpoints #1..#4 at positions 5, 10, 15 and 20, all witnessed."""
    for start in range(0, 20, 5):
        await fill(resources, 5, start)
        await resources.checkpointer.sign_head()
    return resources


def witness_file(resources: Resources) -> Path:
    return resources.settings.witness_file


async def verify(
    resources: Resources, *, witnessed: bool = True, expect_head: Head | None = None
) -> VerifyReport:
    return await verify_log(
        resources.store,
        resources.signing_key.public_key(),
        witness_file=witness_file(resources) if witnessed else None,
        expect_head=expect_head,
    )


@contextlib.asynccontextmanager
async def forced(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser session with the append-only triggers off."""
    async with superuser(database_url) as conn:
        await conn.execute("SET session_replication_role = replica")
        yield conn


async def head_at(resources: Resources, position: int) -> Head:
    rows = await resources.store.read_stored(position - 1, 1)
    return Head(position, rows[0].hash.hex())


async def test_the_untouched_log_verifies_against_its_witness(chained: Resources) -> None:
    report = await verify(chained)
    assert report.ok, report.problem
    assert report.checkpoint_sequence == 4 and report.witnessed == 4
    assert report.witness == str(witness_file(chained))
    assert report.pin == str(await head_at(chained, 20))
    assert report.unchecked == []
    assert len(witness_file(chained).read_text().splitlines()) == 4


async def test_a_middle_edit_is_named(chained: Resources, database_url: str) -> None:
    async with forced(database_url) as conn:
        await conn.execute(
            """UPDATE events SET data = '{"type":"token.revoked","token_id":"t6","reason":"x"}'
               WHERE position = 7"""
        )
    report = await verify(chained)
    assert not report.ok and report.first_broken_position == 7
    assert report.checked == 6 and report.pin is None


async def rehash_from(conn: asyncpg.Connection, position: int) -> None:
    """Recompute prev_hash and hash of every row from `position` on: the chain is whole."""
    rows = await conn.fetch(
        "SELECT position, stream, version, event_id, type, data::text AS data, "
        "meta::text AS meta, recorded_at FROM events WHERE position >= $1 ORDER BY position",
        position,
    )
    prev = bytes(await conn.fetchval("SELECT hash FROM events WHERE position = $1", position - 1))
    for row in rows:
        canonical = canonical_bytes(
            position=row["position"],
            stream=row["stream"],
            version=row["version"],
            event_id=row["event_id"],
            event_type=row["type"],
            data=row["data"],
            meta=row["meta"],
            recorded_at=row["recorded_at"],
        )
        new = link_hash(prev, canonical)
        await conn.execute(
            "UPDATE events SET prev_hash = $2, hash = $3 WHERE position = $1",
            row["position"],
            prev,
            new,
        )
        prev = new


async def test_an_edit_with_the_chain_recomputed_is_caught_by_the_next_checkpoint(
    chained: Resources, database_url: str
) -> None:
    async with forced(database_url) as conn:
        await conn.execute(
            """UPDATE events SET data = '{"type":"token.revoked","token_id":"t6","reason":"x"}'
               WHERE position = 7"""
        )
        await rehash_from(conn, 7)
    report = await verify(chained)
    # every link holds; the signed head at 10 does not
    assert report.checked == 20
    assert not report.ok and report.first_broken_position == 10
    assert "checkpoint #2" in (report.problem or "")
    with pytest.raises(CheckpointRefused, match="rewritten"):
        await chained.checkpointer.sign_head()


async def test_a_truncated_tail_whose_checkpoint_survives_is_caught_without_a_witness(
    chained: Resources, database_url: str
) -> None:
    async with forced(database_url) as conn:
        await conn.execute("DELETE FROM events WHERE position > 17")
    for witnessed in (True, False):
        report = await verify(chained, witnessed=witnessed)
        assert not report.ok and report.first_broken_position == 18
        assert "checkpoint #4" in (report.problem or "") and "deleted" in (report.problem or "")
    # and the signer will not sign the shorter log as if nothing happened, and says so
    refused_before = refusals()
    with pytest.raises(CheckpointRefused, match="no longer has"):
        await chained.checkpointer.sign_head()
    assert refusals() == refused_before + 1


async def test_a_tail_deleted_with_its_checkpoint_is_found_by_the_witness_alone(
    chained: Resources, database_url: str
) -> None:
    pinned = await head_at(chained, 20)
    async with forced(database_url) as conn:
        await conn.execute("DELETE FROM events WHERE position > 15")
        await conn.execute("DELETE FROM checkpoints WHERE position > 15")

    # the database alone cannot tell, and says so
    alone = await verify(chained, witnessed=False)
    assert alone.ok and alone.head.position == 15
    assert alone.unchecked == [NO_WITNESS] and "no witness" in alone.unchecked[0]

    witnessed = await verify(chained)
    assert not witnessed.ok and witnessed.first_broken_position == 16
    problem = witnessed.problem or ""
    assert "checkpoint #4" in problem and f"{witness_file(chained)}:4" in problem
    assert "deleted together with their checkpoints" in problem

    expected = await verify(chained, witnessed=False, expect_head=pinned)
    assert not expected.ok and expected.first_broken_position == 16
    assert "shorter than the expected head" in (expected.problem or "")
    # a head shown earlier, still in the log, is fine
    assert (await verify(chained, witnessed=False, expect_head=await head_at(chained, 12))).ok


async def test_a_tail_deleted_with_several_checkpoints_is_found_by_the_witness(
    chained: Resources, database_url: str
) -> None:
    async with forced(database_url) as conn:
        await conn.execute("DELETE FROM events WHERE position > 7")
        await conn.execute("DELETE FROM checkpoints WHERE position > 7")
    assert (await verify(chained, witnessed=False)).ok
    report = await verify(chained)
    assert not report.ok and report.first_broken_position == 8
    assert "checkpoint #2" in (report.problem or "")


async def test_a_tail_deleted_then_written_again_differs_from_the_witness(
    chained: Resources, database_url: str
) -> None:
    async with forced(database_url) as conn:
        await conn.execute("DELETE FROM events WHERE position > 15")
        await conn.execute("DELETE FROM checkpoints WHERE position > 15")
    await fill(chained, 5, 100)  # the log grows back to 20, differently
    rewritten = await chained.checkpointer.sign_head()
    assert rewritten is not None and (rewritten.sequence, rewritten.position) == (4, 20)
    assert (await verify(chained, witnessed=False)).ok
    report = await verify(chained)
    assert not report.ok and report.first_broken_position == 20
    assert "rewritten" in (report.problem or "")


async def test_swapped_rows_are_named(chained: Resources, database_url: str) -> None:
    columns = "stream, version, event_id, type, data, meta, recorded_at, prev_hash, hash"
    async with forced(database_url) as conn:
        rows = {
            row["position"]: row
            for row in await conn.fetch(
                f"SELECT position, {columns} FROM events WHERE position IN (4, 5)"
            )
        }
        # out of the way first: stream, version and event id are unique
        await conn.execute(
            "UPDATE events SET event_id = gen_random_uuid(), version = -version "
            "WHERE position IN (4, 5)"
        )
        for position, other in ((4, 5), (5, 4)):
            await conn.execute(
                f"UPDATE events SET ({columns}) = ($2, $3, $4, $5, $6::text::json, "
                "$7::text::json, $8, $9, $10) WHERE position = $1",
                position,
                *[rows[other][name] for name in columns.split(", ")],
            )
    report = await verify(chained)
    assert not report.ok and report.first_broken_position == 4


async def test_a_deleted_middle_row_is_named_with_the_trigger_disabled(
    chained: Resources, database_url: str
) -> None:
    async with superuser(database_url) as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await conn.execute("DELETE FROM events WHERE position = 9")
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    report = await verify(chained)
    assert not report.ok and report.first_broken_position == 9


async def test_a_missing_checkpoint_in_the_middle_is_a_gap(
    chained: Resources, database_url: str
) -> None:
    async with forced(database_url) as conn:
        await conn.execute("DELETE FROM checkpoints WHERE sequence = 2")
    for witnessed in (True, False):
        report = await verify(chained, witnessed=witnessed)
        assert not report.ok and "checkpoint #2 is missing" in (report.problem or "")


async def test_an_edited_checkpoint_fails_its_signature(
    chained: Resources, database_url: str
) -> None:
    nine = await head_at(chained, 9)
    async with forced(database_url) as conn:
        await conn.execute(
            "UPDATE checkpoints SET position = 9, head_hash = $1 WHERE sequence = 2",
            bytes.fromhex(nine.hash),
        )
    report = await verify(chained, witnessed=False)
    assert not report.ok and "checkpoint #2 has a bad signature" in (report.problem or "")


async def test_a_tampered_witness_is_named(chained: Resources) -> None:
    path = witness_file(chained)
    lines = path.read_text().splitlines()
    forged = lines[2].replace('"position":15', '"position":14')
    path.write_text("\n".join([*lines[:2], forged, *lines[3:]]) + "\n")
    report = await verify(chained)
    assert not report.ok and f"{path}:3 has a bad signature" in (report.problem or "")


async def test_a_witness_line_cut_short_by_a_crash_is_ignored_with_a_warning(
    chained: Resources,
) -> None:
    path = witness_file(chained)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n" + lines[-1][:40])
    report = await verify(chained)
    assert report.ok and report.witnessed == 4
    assert any("cut short" in warning for warning in report.warnings)
    # the next checkpoint starts a line of its own: witnessed, the torn piece ignored
    await fill(chained, 1, 50)
    await chained.checkpointer.sign_head()
    report = await verify(chained)
    assert report.ok and report.witnessed == 5
    assert any("line 5 is not a checkpoint" in warning for warning in report.warnings)
    assert path.read_text().splitlines()[4] == lines[-1][:40]


async def test_concurrent_signers_never_fork_the_chain(resources: Resources) -> None:
    from app.resources import create_pool
    from app.store.checkpoints import Checkpointer
    from app.store.events import EventStore
    from app.store.witness import Witness

    assert resources.settings.database_url is not None
    pools = [
        await create_pool(resources.settings.database_url, min_size=1, max_size=2) for _ in range(4)
    ]
    try:
        signers = [
            Checkpointer(EventStore(pool), resources.signing_key, Witness(witness_file(resources)))
            for pool in pools
        ]

        async def writer() -> None:
            for n in range(40):
                await fill(resources, 1, n)

        async def signer(checkpointer: Checkpointer) -> None:
            for _ in range(15):
                await checkpointer.sign_head()
                await asyncio.sleep(0)

        await asyncio.gather(writer(), *(signer(s) for s in signers))
        await signers[0].sign_head()
    finally:
        for pool in pools:
            await pool.close()
    checkpoints = await list_checkpoints(resources.store)
    assert [c.sequence for c in checkpoints] == list(range(1, len(checkpoints) + 1))
    assert checkpoints[-1].position == 40
    report = await verify(resources)
    assert report.ok, report.problem
    assert report.witnessed == len(checkpoints)
    witnessed = witness_file(resources).read_text().splitlines()
    assert [f'"sequence":{n},' in line for n, line in enumerate(witnessed, 1)] == [True] * len(
        witnessed
    )
