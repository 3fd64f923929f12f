"""The experiment update job: one look at a running A/B experiment.

It reads the sufficient statistics of each arm from the prediction log joined with the
feedback (count, sum and sum of squares of the rewards; predictions, errors and p99 score
latency) in one aggregate query, so its cost is one scan of the experiment's rows, not a
transfer of them. The statistics and the conclusion are decided in the domain
(`domain.experiments.update`); the job only gathers. A guardrail breach is followed by the
end of the challenger, caused by the `experiment.ended` event (`respond`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.experiments import ArmData, require_running, update
from domain.sequential import Moments
from workers.jobs import inputs
from workers.runner import Context, JobInputError

# shadow rows carry no experiment id; a score that is JSON null was not a finite number
ARMS_SQL = """
SELECT p.version,
       count(*) AS predictions,
       count(*) FILTER (WHERE json_typeof(p.score) = 'null') AS errors,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY p.latency_us) AS p99_us,
       count(f.reward) AS outcomes,
       coalesce(sum(f.reward), 0) AS total,
       coalesce(sum(f.reward * f.reward), 0) AS total_sq
FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.prediction_id
WHERE p.experiment_id = $1
GROUP BY p.version
"""


def arm_data(version: int, row: Mapping[str, Any] | None) -> ArmData:
    """One arm's statistics from its aggregate row (none: it has served nothing yet)."""
    if row is None:
        return ArmData(version, predictions=0, moments=Moments(n=0, total=0.0, total_sq=0.0))
    p99 = row["p99_us"]
    return ArmData(
        version,
        predictions=int(row["predictions"]),
        moments=Moments(
            n=int(row["outcomes"]),
            total=float(row["total"]),
            total_sq=float(row["total_sq"]),
        ),
        errors=int(row["errors"]),
        p99_latency_ms=None if p99 is None else float(p99) / 1000.0,
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
    rows = {
        row["version"]: dict(row) for row in await ctx.resources.pool.fetch(ARMS_SQL, experiment_id)
    }
    return update(
        experiment,
        arm_data(started.champion, rows.get(started.champion)),
        arm_data(started.challenger, rows.get(started.challenger)),
        job.job_id,
    )


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
