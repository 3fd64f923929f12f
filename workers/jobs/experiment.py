"""The experiment update job: one look at a running A/B experiment.

A look adds to the exact running totals of the previous look (its `experiment.updated` event
carries them) only the rows written since: counts, error counts, latency histograms, the
rewards' sums and sums of squares and the fairness groups are all additive. "Since" is by the
id of the transaction that wrote a row (`txid`, a column of the prediction log, the feedback
and the outcome labels) against the previous look's snapshot: it saw exactly the rows of the
transactions with an id below its xmax that were not running then, so the rows it did not see
are those with an id at or above that xmax or among its running ids (`watermark`, `pending`).
A transaction still open at a look (however long: nothing waits for it) is counted by the
first look after it commits. Predictions are counted by the rows of `prediction_totals` that
a trigger adds as the log is written (one per statement, version and latency bucket, with
the statement's `txid`), so even a first look over millions of predictions reads few rows;
rewards by the
feedback row's `txid` (a reward row keeps its prediction's version and experiment, copied when
recorded), whatever the age of their predictions: a reward arriving days late for a
prediction counted long ago is added once, by the look after it. The totals, watermark and
pending ids are recorded in the look's own event, so a look that dies before its event is
recorded leaves nothing behind, and a repeat starts from the same totals. Sums are PostgreSQL
numeric (exact): an incremental sequence of looks and one look from scratch reach the same
sums to the last digit, hence the same mSPRT.

Both aggregates run at once on two connections sharing one exported snapshot. The statistics
and the conclusion are decided in the domain (`domain.looks.update`); the job only gathers. A
guardrail breach is followed by the end of the challenger, caused by the `experiment.ended`
event (`respond`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, localcontext
from typing import Any

import asyncpg
import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.experiments import require_running
from domain.looks import ArmData, update
from domain.sequential import Moments
from domain.state import Experiment
from workers.jobs import inputs
from workers.runner import Context as JobContext
from workers.runner import JobInputError

# the prediction counts come from `prediction_totals` (kept by a trigger as the log is
# written: a row per statement, version and latency bucket, with the statement's txid), not
# from every prediction: a first look over millions of predictions reads a few rows per batch
# the log wrote. Latencies are counted in log buckets 1% wide (an ordered-set percentile sorts
# every row and is not additive; the histogram is): the p99 is the upper edge of its bucket, at
# most 1% above the exact value. A score that is JSON null was not a finite number (an
# error); shadow rows carry no experiment id. $2, $3: the previous look's watermark and
# pending transactions (the rows it counted are the others).
PREDICTIONS_SQL = """
SELECT version, bucket, sum(predictions) AS predictions, sum(errors) AS errors
FROM prediction_totals
WHERE experiment_id = $1 AND (txid >= $2 OR txid = ANY($3::bigint[]))
GROUP BY version, bucket
"""
# the rows a recorded look counted (transactions below its horizon, every one of them
# finished and counted) merged into one per version and bucket, marked with that horizon: a
# look from scratch sums the same, a look from those totals (or later ones) reads none of
# them, and the table keeps a few rows per bucket instead of one per statement. $2 the horizon
COMPACT_SQL = """
WITH counted AS (
    DELETE FROM prediction_totals
    WHERE experiment_id = $1 AND txid < $2
    RETURNING version, bucket, predictions, errors, txid
)
INSERT INTO prediction_totals (experiment_id, version, bucket, predictions, errors, txid,
                               counted_by)
SELECT $1, version, bucket, sum(predictions), sum(errors), max(txid), $2
FROM counted GROUP BY version, bucket
"""
# the horizon of the latest merge: a look from totals older than it counts from scratch (a
# merged row may hold rows those totals counted and rows they did not)
_MERGED_SQL = """
SELECT coalesce(max(counted_by), 0) FROM prediction_totals
WHERE experiment_id = $1 AND counted_by IS NOT NULL
"""
# a reward row keeps its prediction's version and experiment (copied when it is recorded):
# the rewards since the watermark are an index range, however old their predictions are.
# Sums are exact: whole rewards (conversions, counts: most metrics) add as integers, which
# is several times faster than PostgreSQL's numeric, and only fractional ones as numeric; a
# float8 turned numeric keeps 15 significant digits, so both give what a numeric sum of all
# of them gives (checked in tests/workers/test_experiment_looks.py).
REWARDS_SQL = """
SELECT version, count(*) AS outcomes,
       coalesce(sum(reward::int8) FILTER (WHERE whole), 0)
         + coalesce(sum(reward::numeric) FILTER (WHERE NOT whole), 0) AS total,
       coalesce(sum(reward::int8 * reward::int8) FILTER (WHERE whole), 0)
         + coalesce(sum(reward::numeric * reward::numeric) FILTER (WHERE NOT whole), 0)
         AS total_sq
FROM (
    SELECT version, reward, reward = trunc(reward) AND abs(reward) < 2147483648 AS whole
    FROM feedback
    WHERE experiment_id = $1 AND (txid >= $2 OR txid = ANY($3::bigint[]))
) AS rewards
GROUP BY version
"""
# a fairness guardrail's groups: the challenger's logged input rows (the sampled ones that
# keep their features), grouped by the feature's value; $4 the challenger, $5 the feature's
# column, $6 the threshold at which a score is a positive prediction
GROUPS_SQL = """
SELECT features->>$5::int AS grp, count(*) AS predictions,
       count(*) FILTER (WHERE CASE WHEN json_typeof(score) = 'number'
                                   THEN score::text::float8 >= $6 END) AS positives
FROM predictions
WHERE experiment_id = $1 AND (txid >= $2 OR txid = ANY($3::bigint[]))
  AND version = $4 AND features IS NOT NULL
GROUP BY grp
"""
# ... and their outcome labels (0 or 1) sent since, joined to predictions of any age
LABELS_SQL = """
SELECT p.grp,
       count(*) FILTER (WHERE o.label = 1) AS ones,
       count(*) FILTER (WHERE o.label = 1 AND p.positive) AS true_positives,
       count(*) FILTER (WHERE o.label = 0) AS zeros,
       count(*) FILTER (WHERE o.label = 0 AND p.positive) AS false_positives
FROM outcomes o
CROSS JOIN LATERAL (
    SELECT features->>$5::int AS grp,
           coalesce(CASE WHEN json_typeof(score) = 'number'
                         THEN score::text::float8 >= $6 END, false) AS positive
    FROM predictions
    WHERE prediction_id = o.prediction_id AND experiment_id = $1 AND version = $4
      AND features IS NOT NULL
    LIMIT 1
) p
WHERE (o.txid >= $2 OR o.txid = ANY($3::bigint[]))
GROUP BY p.grp
"""
_SNAPSHOT = """
SELECT pg_snapshot_xmax(s)::text::bigint,
       array(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x),
       pg_export_snapshot()
FROM pg_current_snapshot() AS s
"""
_BUCKETS_PER_E = 100.0
# the counts of a group, in `ev.ArmTotals.groups` order, as the group queries name them
_GROUP_COLUMNS = (
    "predictions",
    "positives",
    "ones",
    "true_positives",
    "zeros",
    "false_positives",
)
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class Gathered(msgspec.Struct, frozen=True, kw_only=True):
    """A look's data: each arm as of the snapshot, and the totals carried to the next look."""

    champion: ArmData
    challenger: ArmData
    totals: ev.LookTotals


def quantile_of_buckets(buckets: Mapping[int, int], q: float) -> float | None:
    """The upper edge of the log bucket holding the q-quantile (None: no latencies)."""
    total = sum(buckets.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= rank:
            return math.exp((bucket + 1) / _BUCKETS_PER_E)
    return math.exp((max(buckets) + 1) / _BUCKETS_PER_E)


def added(
    totals: ev.ArmTotals,
    predictions: Iterable[Mapping[str, Any]],
    rewards: Iterable[Mapping[str, Any]],
    grouped: Iterable[Mapping[str, Any]] = (),
) -> ev.ArmTotals:
    """`totals` plus the aggregate rows of its arm (histogram rows, rewards rows, and the
    fairness guardrail's group rows, of the challenger only)."""
    buckets = dict(totals.latency_buckets)
    count, errors = totals.predictions, totals.errors
    for row in predictions:
        if row["version"] != totals.version:
            continue
        count += int(row["predictions"])
        errors += int(row["errors"])
        if row["bucket"] is not None:
            buckets[row["bucket"]] = buckets.get(row["bucket"], 0) + int(row["predictions"])
    groups = {group: list(counts) for group, counts in totals.groups.items()}
    for row in grouped:
        if row["grp"] is None:  # the feature was missing in the row
            continue
        counts = groups.setdefault(row["grp"], [0] * 6)
        for index, column in enumerate(_GROUP_COLUMNS):
            if column in row:
                counts[index] += int(row[column])
    outcomes, total, total_sq = totals.outcomes, totals.total, totals.total_sq
    with localcontext(_EXACT):
        for row in rewards:
            if row["version"] != totals.version:
                continue
            outcomes += int(row["outcomes"])
            total += row["total"]
            total_sq += row["total_sq"]
    return ev.ArmTotals(
        version=totals.version,
        predictions=count,
        errors=errors,
        latency_buckets=buckets,
        outcomes=outcomes,
        total=total,
        total_sq=total_sq,
        groups=groups,
    )


def arm_data(totals: ev.ArmTotals) -> ArmData:
    """One arm's statistics from its totals."""
    p99 = quantile_of_buckets(totals.latency_buckets, 0.99)
    return ArmData(
        totals.version,
        predictions=totals.predictions,
        moments=Moments.exact(totals.outcomes, totals.total, totals.total_sq),
        errors=totals.errors,
        p99_latency_ms=None if p99 is None else p99 / 1000.0,
        groups=totals.groups,
    )


def carried(experiment: Experiment) -> ev.LookTotals | None:
    """The totals the experiment's latest look recorded (None: none, or an older event)."""
    latest = experiment.latest
    return None if latest is None else latest.totals


class Groups(msgspec.Struct, frozen=True, kw_only=True):
    """Where a fairness guardrail's groups come from: the feature's column in the
    challenger's input rows, and the score from which a prediction is positive."""

    column: int
    threshold: float


async def gather(
    pool: asyncpg.Pool,
    experiment_id: str,
    champion: int,
    challenger: int,
    previous: ev.LookTotals | None = None,
    *,
    groups: Groups | None = None,
) -> Gathered:
    """Both arms as of one snapshot: `previous` plus the rows its snapshot could not see."""
    empty = ev.LookTotals(
        watermark=0,
        champion=ev.ArmTotals(version=champion),
        challenger=ev.ArmTotals(version=challenger),
    )
    grouped: list[asyncpg.Record] = []
    async with (
        pool.acquire() as first,
        pool.acquire() as second,
        first.transaction(isolation="repeatable_read", readonly=True),
        second.transaction(isolation="repeatable_read", readonly=True),
    ):
        xmax, running, snapshot = await first.fetchrow(_SNAPSHOT)
        await second.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        # a plan for this look's watermark: a cached generic plan, chosen after a few costly
        # first looks, would scan the whole experiment for a few new rows
        for conn in (first, second):
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        merged = await first.fetchval(_MERGED_SQL, experiment_id)
        if previous is None or xmax < previous.watermark or merged > previous.horizon:
            # the first look; totals of a later snapshot than this one (which a look that
            # read the model before its snapshot cannot meet); or totals older than the rows
            # merged since (a look that read the model before a later look was recorded):
            # counted from scratch
            previous = empty
        args = (experiment_id, previous.watermark, previous.pending)
        predictions, rewards = await asyncio.gather(
            first.fetch(PREDICTIONS_SQL, *args), second.fetch(REWARDS_SQL, *args)
        )
        if groups is not None:
            more = (challenger, groups.column, groups.threshold)
            logged, labelled = await asyncio.gather(
                first.fetch(GROUPS_SQL, *args, *more), second.fetch(LABELS_SQL, *args, *more)
            )
            grouped = [*logged, *labelled]
    # the snapshot saw exactly the rows of the transactions below xmax not running then
    kept = ev.LookTotals(
        watermark=int(xmax),
        pending=sorted(int(x) for x in running),
        champion=added(previous.champion, predictions, rewards),
        challenger=added(previous.challenger, predictions, rewards, grouped),
    )
    return Gathered(
        champion=arm_data(kept.champion), challenger=arm_data(kept.challenger), totals=kept
    )


def groups_of(experiment: Experiment, feature_names: list[str]) -> Groups | None:
    """The fairness guardrail's groups in the challenger's rows (None: no such guardrail)."""
    fairness = experiment.started.guardrails.fairness
    if fairness is None:
        return None
    if fairness.feature not in feature_names:
        raise JobInputError(f"the challenger has no feature {fairness.feature!r}")
    return Groups(column=feature_names.index(fairness.feature), threshold=fairness.threshold)


async def compact(pool: asyncpg.Pool, experiment_id: str, counted: ev.LookTotals) -> None:
    """Merge the experiment's `prediction_totals` rows that the recorded look `counted`
    counted (see COMPACT_SQL); what any look reaches is unchanged."""
    await pool.execute(COMPACT_SQL, experiment_id, counted.horizon)


async def merge_and_gather(
    pool: asyncpg.Pool,
    experiment_id: str,
    champion: int,
    challenger: int,
    previous: ev.LookTotals | None,
    *,
    groups: Groups | None = None,
) -> Gathered:
    """A look's data as the job takes it: the rows the recorded look (`previous`) counted
    merged first, then both arms gathered from its totals."""
    if previous is not None:
        await compact(pool, experiment_id, previous)
    return await gather(pool, experiment_id, champion, challenger, previous, groups=groups)


async def run(ctx: JobContext) -> cmd.ExperimentReported:
    """Gather each arm's statistics and decide the look (and any conclusion)."""
    job = ctx.job
    experiment_id = job.params.get("experiment_id")
    if not isinstance(experiment_id, str):
        raise JobInputError("params.experiment_id must name the experiment")
    found = await inputs.subject(ctx)
    experiment = require_running(found.model, experiment_id)
    started = experiment.started
    challenger = found.model.versions[started.challenger]
    gathered = await merge_and_gather(
        ctx.resources.pool,
        experiment_id,
        started.champion,
        started.challenger,
        carried(experiment),
        groups=groups_of(experiment, challenger.feature_names),
    )
    return update(
        experiment, gathered.champion, gathered.challenger, job.job_id, totals=gathered.totals
    )


async def respond(ctx: JobContext) -> None:
    """End the challenger of an experiment this job ended on a guardrail, caused by that
    conclusion (a repeat finds it recorded: its events' ids are fixed by the job)."""
    recorded = await ctx.resources.store.read_stream(model_stream(ctx.job.name))
    breaches = [
        r
        for r in recorded
        if isinstance(r.event, ev.ExperimentEnded)
        and r.event.job_id == ctx.job.job_id
        and r.event.outcome == "guardrail_breach"
    ]
    if not breaches:
        return
    ended = breaches[0]
    assert isinstance(ended.event, ev.ExperimentEnded)
    meta = msgspec.structs.replace(ctx.meta, causation_id=str(ended.event_id))
    await ctx.resources.governance.handle(
        cmd.EndBreachingChallenger(name=ctx.job.name, ended=ended.event), meta
    )
