"""Incremental experiment looks: a look adds to the previous look's exact totals only the rows
written since, and reaches what one look from scratch reaches, to the last digit (late
rewards for old predictions, transactions still open at a look, looks that died included)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import numpy as np
import pytest

from domain import events as ev
from domain.sequential import look
from workers.jobs.experiment import Gathered, compact, gather

EXPERIMENT = "exp-looks"
_PREDICT = """
INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, arm, score,
                         created_at, experiment_id, latency_us)
SELECT id, 'fraud', 'production', version, 'lib',
       CASE WHEN version = 1 THEN 'champion' ELSE 'challenger' END,
       CASE WHEN error THEN 'null'::json ELSE '0.5'::json END, now(), $5, latency
FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::float8[]) AS t(id, version, error, latency)
"""
_REWARD = """
INSERT INTO feedback (prediction_id, name, environment, version, reward, recorded_at,
                      experiment_id)
SELECT p.prediction_id, p.name, p.environment, p.version, r.reward, now(), p.experiment_id
FROM unnest($1::uuid[], $2::float8[]) AS r(id, reward)
JOIN predictions p ON p.prediction_id = r.id
"""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as created:
        yield created


class Log:
    """Predictions and rewards written to the database, and the same held as arrays."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids: list[uuid.UUID] = []
        self.versions: list[int] = []
        self.errors: list[bool] = []
        self.rewards: dict[uuid.UUID, float] = {}

    async def predict(self, conn: asyncpg.Connection | asyncpg.Pool, n: int) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(n)]
        versions = [int(v) for v in self.rng.integers(1, 3, n)]
        errors = [bool(e) for e in self.rng.random(n) < 0.02]
        latency = [float(x) for x in self.rng.lognormal(4.0, 0.6, n)]
        await conn.execute(_PREDICT, ids, versions, errors, latency, EXPERIMENT)
        self.ids += ids
        self.versions += versions
        self.errors += errors
        return ids

    async def reward(
        self, conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[uuid.UUID]
    ) -> None:
        # revenue: long-tailed, large and fractional, so float sums depend on their order
        values = [float(x) for x in self.rng.lognormal(6.0, 1.5, len(ids)) + 1e6]
        await conn.execute(_REWARD, list(ids), values)
        self.rewards.update(zip(ids, values, strict=True))

    def unrewarded(self) -> list[uuid.UUID]:
        return [i for i in self.ids if i not in self.rewards]


async def _look(pool: asyncpg.Pool, previous: Gathered | None) -> Gathered:
    return await gather(pool, EXPERIMENT, 1, 2, None if previous is None else previous.totals)


def _assert_same(incremental: Gathered, scratch: Gathered) -> None:
    # the arms' data (counts, histograms, exact sums turned to moments) are identical ...
    assert incremental.champion == scratch.champion
    assert incremental.challenger == scratch.challenger
    # ... and so is the mSPRT of one look at them
    one = look(incremental.champion.moments, incremental.challenger.moments, tau2=25.0, alpha=0.05)
    other = look(scratch.champion.moments, scratch.challenger.moments, tau2=25.0, alpha=0.05)
    assert one == other


def _assert_matches_arrays(gathered: Gathered, log: Log) -> None:
    """Cross-check with numpy on the same rows held in memory."""
    versions = np.array(log.versions)
    errors = np.array(log.errors)
    for arm in (gathered.champion, gathered.challenger):
        mask = versions == arm.version
        assert arm.predictions == int(mask.sum())
        assert arm.errors == int(errors[mask].sum())
        rewards = np.array(
            [log.rewards[i] for i, v in zip(log.ids, log.versions, strict=True)
             if v == arm.version and i in log.rewards]
        )  # fmt: skip
        assert arm.moments.n == rewards.size
        assert arm.moments.mean == pytest.approx(rewards.mean(), rel=1e-12)
        assert arm.moments.variance == pytest.approx(rewards.var(ddof=1), rel=1e-9)


async def test_a_sequence_of_looks_with_late_rewards_equals_one_look_from_scratch(
    pool: asyncpg.Pool,
) -> None:
    log = Log(seed=7)
    # given: a first batch, half of it rewarded, and a look
    first = await log.predict(pool, 600)
    await log.reward(pool, first[:300])
    one = await _look(pool, None)
    assert one.totals.watermark > 0
    # when: more predictions, rewards for them and late rewards for the first batch (before
    # the previous look), then a look; and again
    second = await log.predict(pool, 500)
    await log.reward(pool, first[300:450] + second[:200])
    two = await _look(pool, one)
    third = await log.predict(pool, 400)
    await log.reward(pool, first[450:] + second[200:] + third[::2])
    three = await _look(pool, two)
    # then: the last look is the look from scratch, to the last digit, and matches numpy
    _assert_same(three, await _look(pool, None))
    _assert_matches_arrays(three, log)
    # and the totals carried never count a row twice: a look with nothing new changes nothing
    four = await _look(pool, three)
    _assert_same(four, three)
    assert four.totals.champion.predictions <= log.versions.count(1)


async def test_a_transaction_open_at_a_look_is_counted_once_it_commits(
    pool: asyncpg.Pool,
) -> None:
    log = Log(seed=8)
    early = await log.predict(pool, 300)
    one = await _look(pool, None)
    # given: a transaction writes predictions and late rewards but has not committed ...
    async with pool.acquire() as slow:
        transaction = slow.transaction()
        await transaction.start()
        slow_xid = await slow.fetchval("SELECT pg_current_xact_id()::text::bigint")
        pending = await log.predict(slow, 200)
        await log.reward(slow, early[:100])
        # ... while newer transactions commit theirs
        later = await log.predict(pool, 250)
        await log.reward(pool, later[:50] + early[100:150])
        # when: a look is taken now
        two = await _look(pool, one)
        # then: it counts what committed, and keeps the open transaction, whose rows it has
        # not seen, among those to read again
        assert slow_xid < two.totals.watermark and slow_xid in two.totals.pending
        seen = two.champion.predictions + two.challenger.predictions
        assert seen == 300 + 250
        assert two.champion.moments.n + two.challenger.moments.n == 100
        await transaction.commit()
    assert pending
    # when: the transaction has committed, the next look counts its rows, once
    three = await _look(pool, two)
    assert three.champion.predictions + three.challenger.predictions == 750
    _assert_same(three, await _look(pool, None))
    _assert_matches_arrays(three, log)


async def test_a_look_that_died_leaves_the_next_one_exact(pool: asyncpg.Pool) -> None:
    log = Log(seed=9)
    first = await log.predict(pool, 400)
    await log.reward(pool, first[:200])
    recorded = await _look(pool, None)
    more = await log.predict(pool, 300)
    await log.reward(pool, first[200:] + more[:100])
    # given: a look that gathered from the recorded totals but died before its event
    await _look(pool, recorded)
    await log.reward(pool, more[100:])
    # when: the next look starts from the totals recorded last (the dead one's are nowhere)
    after = await _look(pool, recorded)
    # then: nothing was counted twice
    _assert_same(after, await _look(pool, None))
    _assert_matches_arrays(after, log)


def test_totals_round_trip_through_the_event_exactly() -> None:
    from decimal import Decimal

    import msgspec

    totals = ev.LookTotals(
        watermark=123,
        champion=ev.ArmTotals(
            version=1, predictions=3, latency_buckets={460: 2, 470: 1},
            outcomes=2, total=Decimal("1000000.123456789012345"),
            total_sq=Decimal("1000000246913.57802469135779440"),
        ),
        challenger=ev.ArmTotals(version=2),
    )  # fmt: skip
    encoded = msgspec.json.encode(totals)
    assert msgspec.json.decode(encoded, type=ev.LookTotals) == totals


_GROUPED = """
INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, arm, score,
                         features, created_at, experiment_id, latency_us)
SELECT id, 'fraud', 'production', 2, 'lib', 'challenger', to_json(score),
       json_build_array(1.5, grp), now(), $4, 50.0
FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS t(id, grp, score)
"""
_LABEL = """
INSERT INTO outcomes (prediction_id, name, environment, version, label, observed_at, recorded_at)
SELECT id, 'fraud', 'production', 2, label, now(), now()
FROM unnest($1::uuid[], $2::float8[]) AS t(id, label)
"""


async def test_fairness_groups_and_late_labels_add_up_to_fairlearns_gaps(
    pool: asyncpg.Pool,
) -> None:
    from fairlearn.metrics import (
        demographic_parity_difference,
        equalized_odds_difference,
    )

    from domain.looks import fairness_gap
    from workers.jobs.experiment import Groups

    rng = np.random.default_rng(11)
    groups = Groups(column=1, threshold=0.5)
    ids, group, truth, score = [], [], [], []
    labelled: list[uuid.UUID] = []
    looked: Gathered | None = None
    for batch in range(3):
        n = 400
        new_ids = [uuid.uuid4() for _ in range(n)]
        new_group = rng.choice(["a", "b", "c"], size=n).tolist()
        new_truth = (rng.random(n) < 0.3).astype(float).tolist()
        bias = np.where(np.array(new_group) == "a", 0.15, 0.0)
        new_score = (rng.random(n) * 0.6 + 0.3 * np.array(new_truth) + bias).tolist()
        await pool.execute(_GROUPED, new_ids, new_group, new_score, EXPERIMENT)
        ids += new_ids
        group += new_group
        truth += new_truth
        score += new_score
        # labels come late: each batch labels what the previous batches scored, and some
        # of its own rows
        todo = [i for i in ids if i not in set(labelled)][: 300 + 50 * batch]
        index = {i: k for k, i in enumerate(ids)}
        await pool.execute(_LABEL, todo, [truth[index[i]] for i in todo])
        labelled += todo
        looked = await gather(
            pool, EXPERIMENT, 1, 2, None if looked is None else looked.totals, groups=groups
        )
    assert looked is not None
    scratch = await gather(pool, EXPERIMENT, 1, 2, None, groups=groups)
    assert looked.challenger == scratch.challenger
    predicted = (np.array(score) >= 0.5).astype(int)
    sensitive = np.array(group)
    parity = demographic_parity_difference(np.array(truth), predicted, sensitive_features=sensitive)
    assert fairness_gap(looked.challenger.groups, "demographic_parity", 1) == pytest.approx(
        parity, abs=1e-12
    )
    index = {i: k for k, i in enumerate(ids)}
    rows = np.array([index[i] for i in labelled])
    odds = equalized_odds_difference(
        np.array(truth)[rows], predicted[rows], sensitive_features=sensitive[rows]
    )
    assert fairness_gap(looked.challenger.groups, "equalized_odds", 1) == pytest.approx(
        odds, abs=1e-12
    )


# the predictions' own counts, by transaction: what `prediction_totals` must hold
_RAW_COUNTS = """
SELECT experiment_id, version,
       CASE WHEN latency_us IS NOT NULL THEN floor(ln(greatest(latency_us, 1.0)) * 100)::int
       END AS bucket,
       txid, count(*) AS predictions, count(*) FILTER (WHERE score::text = 'null') AS errors
FROM predictions WHERE experiment_id IS NOT NULL
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
_KEPT_COUNTS = """
SELECT experiment_id, version, bucket, txid, sum(predictions) AS predictions,
       sum(errors) AS errors
FROM prediction_totals GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""


async def test_prediction_totals_kept_at_ingest_are_the_log_counted_row_by_row(
    pool: asyncpg.Pool,
) -> None:
    log = Log(seed=12)
    # given: predictions written by INSERT, several statements in one transaction, a COPY
    # (what the scorer's log writer does), rows of no experiment and rows with no latency
    await log.predict(pool, 300)
    async with pool.acquire() as conn, conn.transaction():
        await log.predict(conn, 100)
        await log.predict(conn, 50)
    columns = ("prediction_id", "name", "environment", "version", "library_sha256", "arm",
               "score", "created_at", "experiment_id", "latency_us")  # fmt: skip
    now = datetime.now(UTC)
    copied = [
        (uuid.uuid4(), "fraud", "production", 1 + k % 2, "lib", "champion",
         "null" if k % 7 == 0 else "0.5", now, EXPERIMENT if k % 3 else None,
         None if k % 5 == 0 else 40.0 + k)
        for k in range(200)
    ]  # fmt: skip
    await pool.copy_records_to_table("predictions", records=copied, columns=columns)
    # then: the totals hold, transaction by transaction, what counting every row gives
    kept = [dict(r) for r in await pool.fetch(_KEPT_COUNTS)]
    assert kept == [dict(r) for r in await pool.fetch(_RAW_COUNTS)]
    assert len({row["txid"] for row in kept}) == 3
    assert any(row["bucket"] is None for row in kept)
    # and a look counts what the rows say
    looked = await _look(pool, None)
    logged = sum(1 for row in copied if row[8] is not None) + 450
    assert looked.champion.predictions + looked.challenger.predictions == logged


async def test_whole_and_fractional_rewards_sum_as_numeric_sums_do(pool: asyncpg.Pool) -> None:
    # whole rewards add as integers, fractional ones (and whole ones too big to square in a
    # bigint) as numeric: the sums must be what numeric gives for all of them
    rewards = [0.0, 1.0, 1.0, -0.0, 2.5, -3.0, 0.1, 2.0**31, -(2.0**31) + 1, 1e15, 1 / 3,
               123456789.125, 7.0, 1e-300, -2.0**40]  # fmt: skip
    log = Log(seed=13)
    ids = await log.predict(pool, len(rewards))
    await pool.execute(_REWARD, ids, rewards)
    looked = await _look(pool, None)
    expected = {
        row["version"]: row
        for row in await pool.fetch(
            "SELECT version, count(*) AS n, sum(reward::numeric) AS total, "
            "sum(reward::numeric * reward::numeric) AS total_sq FROM feedback GROUP BY version"
        )
    }
    for arm in (looked.totals.champion, looked.totals.challenger):
        row = expected[arm.version]
        assert (arm.outcomes, arm.total, arm.total_sq) == (row["n"], row["total"], row["total_sq"])


async def test_merging_the_totals_a_look_counted_changes_no_look(pool: asyncpg.Pool) -> None:
    log = Log(seed=14)
    for _ in range(3):  # a statement each, as the log's batches
        await log.reward(pool, (await log.predict(pool, 200))[:50])
    one = await _look(pool, None)
    async with pool.acquire() as slow:
        # given: a transaction still open at the second look, and that look recorded
        transaction = slow.transaction()
        await transaction.start()
        await log.predict(slow, 70)
        for _ in range(3):
            await log.predict(pool, 100)
        two = await _look(pool, one)
        before = await pool.fetchval("SELECT count(*) FROM prediction_totals")
        # when: the rows the second look counted are merged
        await compact(pool, EXPERIMENT, two.totals)
        await transaction.commit()
    # then: one merged row per version and bucket holds them; the open transaction's are not
    # among them
    after = await pool.fetchval("SELECT count(*) FROM prediction_totals")
    buckets = await pool.fetchval(
        "SELECT count(DISTINCT (version, bucket)) FROM prediction_totals "
        "WHERE counted_by IS NOT NULL"
    )
    assert after < before
    assert buckets == await pool.fetchval(
        "SELECT count(*) FROM prediction_totals WHERE counted_by IS NOT NULL"
    )
    # and every look reaches what it reached without the merge: from the recorded totals,
    # from scratch, and from totals older than the merge (counted from scratch: a merged row
    # holds rows those totals counted and rows they did not)
    await log.predict(pool, 150)
    three = await _look(pool, two)
    assert three.champion.predictions + three.challenger.predictions == 1_120
    _assert_same(three, await _look(pool, None))
    _assert_same(three, await _look(pool, one))
    _assert_matches_arrays(three, log)
    # and merging again (a later look's rows, or the same look's) is as harmless
    await compact(pool, EXPERIMENT, three.totals)
    await compact(pool, EXPERIMENT, three.totals)
    _assert_same(three, await _look(pool, two))
    _assert_same(three, await _look(pool, None))
