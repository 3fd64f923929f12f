"""The bandit job: rewards since the experiment began, folded into Beta posteriors per arm.

Rewards come from `POST /v1/feedback` (table `feedback`, one row per prediction). The job
records the posteriors and the new traffic allocation (`bandit.updated`, which the scorers
route by), and names a winner once the policy's probability to beat the champion is reached
(`experiment.concluded`); recording that also settles the deployment on the winner
(`domain.deploy.settle_experiment`), so the experiment ends there.
"""

from __future__ import annotations

import uuid

from domain import commands as cmd
from domain import events as ev
from domain.errors import Conflict
from workers.jobs import inputs
from workers.ml.bandit import BanditDecision, update
from workers.runner import Context

_REWARDS = (
    "SELECT version, count(*) AS n, coalesce(sum(reward), 0) AS total FROM feedback "
    "WHERE name = $1 AND environment = $2 AND recorded_at >= $3 GROUP BY version"
)


def update_in_child(
    counts: dict[int, tuple[float, float]],
    champion: int,
    seed: int,
    probability_to_beat: float,
    min_rewards_per_arm: int,
) -> BanditDecision:
    """Runs in the process pool: Monte Carlo over the posteriors."""
    return update(
        counts,
        champion,
        seed=seed,
        probability_to_beat=probability_to_beat,
        min_rewards_per_arm=min_rewards_per_arm,
    )


async def run(ctx: Context) -> cmd.BanditReported:
    """Aggregate the experiment's rewards and decide the update (and any conclusion)."""
    job = ctx.job
    found = await inputs.subject(ctx)
    environment = str(job.params.get("environment", "production"))
    slot = found.model.deployments.get(environment)
    if (
        slot is None
        or slot.strategy != "bandit"
        or slot.champion is None
        or slot.challenger is None
    ):
        raise Conflict(f"no bandit experiment runs in {environment}")
    champion, challenger = slot.champion, slot.challenger
    counts: dict[int, tuple[float, float]] = {champion: (0.0, 0.0), challenger: (0.0, 0.0)}
    rows = await ctx.resources.pool.fetch(_REWARDS, job.name, environment, slot.updated_at)
    for row in rows:
        if row["version"] in counts:
            total = float(row["total"])
            counts[row["version"]] = (total, float(row["n"]) - total)
    policy = found.policy
    decision = await ctx.pool.run(
        ctx.resources.settings.job_timeout_seconds,
        update_in_child,
        counts,
        champion,
        uuid.UUID(job.job_id).int % 2**32,  # the same draws on every attempt
        policy.bandit_probability_to_beat,
        policy.bandit_min_rewards_per_arm,
    )
    updated = ev.BanditUpdated(
        name=job.name,
        environment=environment,
        champion=champion,
        arms=[
            ev.BanditArm(
                version=arm.version,
                successes=arm.successes,
                failures=arm.failures,
                allocation=arm.allocation,
                probability_best=arm.probability_best,
            )
            for arm in decision.arms
        ],
        probability_to_beat=decision.probability_to_beat,
        p_value=decision.p_value,
        rewards=int(sum(s + f for s, f in counts.values())),
        job_id=job.job_id,
    )
    conclusion = None
    if decision.concluded and decision.winner is not None:
        conclusion = ev.ExperimentConcluded(
            name=job.name,
            environment=environment,
            champion=champion,
            winner=decision.winner,
            probability_to_beat=decision.probability_to_beat,
            p_value=decision.p_value,
            job_id=job.job_id,
        )
    return cmd.BanditReported(update=updated, conclusion=conclusion)
