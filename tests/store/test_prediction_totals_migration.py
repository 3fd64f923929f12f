"""Predictions logged before the totals were kept at ingest (migration 0012) are counted by
the migration, each by the transaction that wrote it, so a look after the upgrade sees them
as the look before it did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.store.migrate import migrate
from tests.conftest import RUN_ID, with_database
from workers.jobs.experiment import gather

BEFORE_TOTALS = "0011"
_PREDICT = """
INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, arm, score,
                         created_at, experiment_id, latency_us)
SELECT gen_random_uuid(), 'fraud', 'production', 1 + i % 2, 'lib', 'champion',
       CASE WHEN i % 9 = 0 THEN 'null'::json ELSE '0.5'::json END, now(), $1,
       CASE WHEN i % 11 = 0 THEN NULL ELSE 30.0 + i END
FROM generate_series(1, $2) AS i
"""


@pytest.fixture
async def old_database(server_url: str) -> AsyncIterator[str]:
    """A database migrated only up to the revision before the totals."""
    name = f"ml_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        await asyncio.to_thread(migrate, url, BEFORE_TOTALS)
        yield url
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_the_upgrade_counts_the_predictions_already_logged(old_database: str) -> None:
    conn = await asyncpg.connect(old_database)
    try:
        # given: predictions of two experiments and of none, in three transactions
        await conn.execute(_PREDICT, "exp-a", 120)
        await conn.execute(_PREDICT, "exp-b", 80)
        await conn.execute(_PREDICT, None, 50)
        await conn.execute(_PREDICT, "exp-a", 40)
        raw = await conn.fetch(
            "SELECT experiment_id, txid, count(*) AS n FROM predictions "
            "WHERE experiment_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    # when: the database is upgraded
    await asyncio.to_thread(migrate, old_database)
    pool = await asyncpg.create_pool(old_database, min_size=2, max_size=2)
    try:
        # then: each transaction's predictions are counted under its own id ...
        kept = await pool.fetch(
            "SELECT experiment_id, txid, sum(predictions) AS n FROM prediction_totals "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        assert [tuple(r) for r in kept] == [tuple(r) for r in raw]
        # ... and a look from scratch counts them all, errors and latencies included
        looked = await gather(pool, "exp-a", 1, 2, None)
        assert looked.champion.predictions + looked.challenger.predictions == 160
        errors = sum(1 for i in range(1, 121) if i % 9 == 0) + sum(
            1 for i in range(1, 41) if i % 9 == 0
        )
        assert looked.champion.errors + looked.challenger.errors == errors
        timed = sum(
            sum(arm.latency_buckets.values())
            for arm in (looked.totals.champion, looked.totals.challenger)
        )
        assert timed == 160 - sum(1 for i in range(1, 121) if i % 11 == 0) - sum(
            1 for i in range(1, 41) if i % 11 == 0
        )
        # and predictions logged after the upgrade are counted as they are written
        await pool.execute(_PREDICT, "exp-a", 10)
        again = await gather(pool, "exp-a", 1, 2, looked.totals)
        assert again.champion.predictions + again.challenger.predictions == 170
    finally:
        await pool.close()
