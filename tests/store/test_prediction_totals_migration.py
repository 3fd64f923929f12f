"""Predictions logged before the totals were kept at ingest (migration 0012) are counted by
the migration, each by the transaction that wrote it, so a look after the upgrade sees them
as the look before it did."""

from __future__ import annotations

import asyncio

import asyncpg

from app.store.migrate import migrate
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


async def test_the_upgrade_counts_the_predictions_already_logged(blank_database: str) -> None:
    old_database = blank_database
    await asyncio.to_thread(migrate, old_database, BEFORE_TOTALS)
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
