"""The experiment update job: one look at a running A/B experiment.

It reads the sufficient statistics of each arm in two aggregate queries run at once: the
prediction log's (predictions, errors, a latency histogram for the p99) and the feedback
joined with it (count, sum and sum of squares of the rewards). Its cost is a scan of the
experiment's rows, not a transfer of them. The statistics and the conclusion are decided in
the domain (`domain.experiments.update`); the job only gathers. A guardrail breach is
followed by the end of the challenger, caused by the `experiment.ended` event (`respond`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.experiments import require_running
from domain.looks import ArmData, update
from domain.sequential import Moments
from workers.jobs import inputs
from workers.runner import Context, JobInputError

# shadow rows carry no experiment id; a score that is JSON null was not a finite number.
# Latencies are counted in log buckets 1% wide (an ordered-set percentile sorts every row and
# cannot run in parallel; the histogram is a hash aggregate that can): the p99 is the upper
# edge of its bucket, at most 1% above the exact value.
PREDICTIONS_SQL = """
SELECT version,
       floor(ln(greatest(latency_us, 1.0)) * 100)::int AS bucket,
       count(*) AS predictions,
       count(*) FILTER (WHERE score::text = 'null') AS errors
FROM predictions
WHERE experiment_id = $1
GROUP BY version, bucket
"""
REWARDS_SQL = """
SELECT p.version, count(*) AS outcomes, sum(f.reward) AS total,
       sum(f.reward * f.reward) AS total_sq
FROM feedback f JOIN predictions p ON p.prediction_id = f.prediction_id
WHERE p.experiment_id = $1
GROUP BY p.version
"""
_BUCKETS_PER_E = 100.0


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


def arm_data(
    version: int, predictions: Sequence[Mapping[str, Any]], rewards: Mapping[str, Any] | None
) -> ArmData:
    """One arm's statistics from its histogram rows and its rewards row."""
    counted = [row for row in predictions if row["version"] == version]
    latencies = {row["bucket"]: row["predictions"] for row in counted if row["bucket"] is not None}
    p99 = quantile_of_buckets(latencies, 0.99)
    moments = Moments(n=0, total=0.0, total_sq=0.0)
    if rewards is not None:
        moments = Moments(
            n=int(rewards["outcomes"]),
            total=float(rewards["total"]),
            total_sq=float(rewards["total_sq"]),
        )
    return ArmData(
        version,
        predictions=sum(int(row["predictions"]) for row in counted),
        moments=moments,
        errors=sum(int(row["errors"]) for row in counted),
        p99_latency_ms=None if p99 is None else p99 / 1000.0,
    )


async def gather_arms(
    pool: asyncpg.Pool, experiment_id: str, champion: int, challenger: int
) -> tuple[ArmData, ArmData]:
    """Both arms' statistics: the two aggregates run at once, on two connections."""
    predictions, rewards = await asyncio.gather(
        pool.fetch(PREDICTIONS_SQL, experiment_id), pool.fetch(REWARDS_SQL, experiment_id)
    )
    by_version = {row["version"]: row for row in rewards}
    return (
        arm_data(champion, predictions, by_version.get(champion)),
        arm_data(challenger, predictions, by_version.get(challenger)),
    )


async def run(ctx: Context) -> cmd.ExperimentReported:
    """Gather each arm's statistics and decide the look (and any conclusion)."""
    job = ctx.job
    experiment_id = job.params.get("experiment_id")
    if not isinstance(experiment_id, str):
        raise JobInputError("params.experiment_id must name the experiment")
    found = await inputs.subject(ctx)
    experiment = require_running(found.model, experiment_id)
    started = experiment.started
    champion, challenger = await gather_arms(
        ctx.resources.pool, experiment_id, started.champion, started.challenger
    )
    return update(experiment, champion, challenger, job.job_id)


async def respond(ctx: Context) -> None:
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
