"""Experiment bench (issue 13): one look of the experiment update job, and peeking.

E1  looks at an A/B experiment with N logged predictions (10,000,000; 1,000,000 with
    --quick), half per arm, half of them with a feedback reward (conversion 10% against
    10.1%), 0.01% with a non-finite score, a long-tailed score latency. Predictions are
    written 2,000 a statement (what the scorer's log writer COPYs per flush at 10,000
    predictions a second), so the totals the log's trigger keeps (`prediction_totals`) have
    as many rows as in operation. "job" is what the update job does
    (workers/jobs/experiment.py): its two aggregates, over those totals and over the
    feedback, at once on two connections sharing a snapshot, added to the previous look's
    totals, then `domain.looks.update` (mSPRT, guardrails, policy). Its p99 comes from a
    latency histogram of 1%-wide log buckets (within 1% above the exact value, which is
    checked). "numpy" is a bare numpy computation of the same statistics (counts, errors,
    p99 latency, mean and variance of the rewards, the mixture likelihood ratio, p-value and
    interval) on the same rows already in memory as arrays (fetching them is not timed). Two
    looks are measured:
      cold    the experiment's first look: no totals yet, every totals row and every reward
              is read;
      steady  a look after 1% more arrived (N/100 predictions, half rewarded, and as many late
              rewards for predictions from before the previous look): it adds those rows to
              the totals the previous look recorded, after merging the totals rows that
              look counted (as the job does; the first merge, of every row the cold look
              counted, is timed and reported apart: it happens once). numpy computes over all
              N + N/100 rows.
    Both must agree with numpy, and the steady look with a cold look at the same rows to the
    last digit. Goal: job / numpy <= 2x, for both looks. Runs alternate (numpy, job, ...) and
    the median of each counts.
E2  the A/A false-positive table: 500 experiments (2,000 with the full run) of 2,000 outcomes
    per arm whose arms are the same distribution, read every 10 outcomes from the 20th; the
    share ever declared different, for the mSPRT and for a fixed-horizon z-test read at the
    same looks (what peeking does without an always-valid method), with the binomial bound
    alpha + 3 standard errors. Then the power of an A/B with a true effect (10% -> 13%).

    uv run python -m bench.experiments [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
from pyarrow import csv
from scipy import stats

from bench import common
from domain import events as ev
from domain.looks import update
from domain.sequential import ever_rejects
from domain.state import Experiment
from workers.jobs.experiment import Gathered, compact, gather, merge_and_gather

EXPERIMENT = "bench-experiment"
MDE, ALPHA = 0.01, 0.05
# predictions per statement: what the scorer's log writer COPYs per flush (every 0.2 s) at
# 10,000 predictions a second, so `prediction_totals` gets the rows it gets in operation
LOG_BATCH = 2_000
_FILL = """
INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, arm, score,
                         created_at, experiment_id, latency_us)
SELECT gen_random_uuid(), 'bench', 'production', 1 + i % 2, 'lib',
       CASE WHEN i % 2 = 0 THEN 'champion' ELSE 'challenger' END,
       CASE WHEN random() < 0.0001 THEN 'null'::json ELSE '0.5'::json END,
       now(), $2, 40 + 20 * random() + CASE WHEN random() < 0.02 THEN 400 * random() ELSE 0 END
FROM generate_series($1::bigint, $1::bigint + $3 - 1) AS i
"""
_FEEDBACK = """
INSERT INTO feedback (prediction_id, name, environment, version, reward, recorded_at,
                      experiment_id)
SELECT prediction_id, name, environment, version,
       (random() < CASE WHEN version = 1 THEN 0.100 ELSE 0.101 END)::int, now(), experiment_id
FROM predictions WHERE random() < 0.5
"""
# 1% more: new predictions (half rewarded) and late rewards for old unrewarded predictions
_MORE_FEEDBACK = """
INSERT INTO feedback (prediction_id, name, environment, version, reward, recorded_at,
                      experiment_id)
SELECT prediction_id, name, environment, version,
       (random() < CASE WHEN version = 1 THEN 0.100 ELSE 0.101 END)::int, now(), experiment_id
FROM predictions p
WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.prediction_id = p.prediction_id)
  AND (p.created_at > $1 AND random() < 0.5 OR p.created_at <= $1 AND random() < $2)
"""
_ARRAYS = """
SELECT p.version, p.latency_us, (json_typeof(p.score) = 'null')::int, f.reward
FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.prediction_id
WHERE p.experiment_id = 'bench-experiment'
"""


def _experiment() -> Experiment:
    started = ev.ExperimentStarted(
        name="bench",
        experiment_id=EXPERIMENT,
        environment="production",
        champion=1,
        challenger=2,
        traffic_percent=50.0,
        metric=ev.ExperimentMetric(name="conversion"),
        guardrails=ev.Guardrails(max_error_rate=0.01, max_p99_latency_ms=5.0),
        minimum_detectable_effect=MDE,
        alpha=ALPHA,
        horizon_per_arm=10**9,
    )
    return Experiment(started=started, started_at=datetime.now(UTC), started_by="bench", position=0)


async def _predict(pool: asyncpg.Pool, first: int, rows: int) -> None:
    """`rows` predictions from number `first` on, a statement per batch the log would write."""
    for start in range(first, first + rows, LOG_BATCH):
        await pool.execute(_FILL, start, EXPERIMENT, min(LOG_BATCH, first + rows - start))


async def _fill(pool: asyncpg.Pool, rows: int) -> None:
    await pool.execute("SELECT setseed(0.13)")
    await _predict(pool, 0, rows)
    await pool.execute(_FEEDBACK)
    await pool.execute("VACUUM ANALYZE predictions")
    await pool.execute("VACUUM ANALYZE feedback")


async def _arrays(pool: asyncpg.Pool) -> dict[str, npt.NDArray[Any]]:
    buffer = io.BytesIO()
    async with pool.acquire() as conn:
        await conn.copy_from_query(_ARRAYS, output=buffer, format="csv")
    buffer.seek(0)
    names = ["version", "latency_us", "error", "reward"]
    table = csv.read_csv(buffer, read_options=csv.ReadOptions(column_names=names))
    return {
        "version": table["version"].to_numpy(),
        "latency_us": table["latency_us"].to_numpy(),
        "error": table["error"].to_numpy(),
        "reward": table["reward"].to_numpy(zero_copy_only=False).astype(np.float64),
    }


async def _job(
    pool: asyncpg.Pool, experiment: Experiment, previous: Gathered | None
) -> tuple[Gathered, dict[str, float]]:
    totals = None if previous is None else previous.totals
    gathered = await merge_and_gather(pool, EXPERIMENT, 1, 2, totals)
    look = update(experiment, gathered.champion, gathered.challenger, totals=gathered.totals)
    return gathered, {
        "effect": look.update.effect,
        "p_value": look.update.p_value,
        "ci_low": look.update.ci_low or -math.inf,
        "p99_ms": look.update.challenger.p99_latency_ms or 0.0,
    }


async def _more(pool: asyncpg.Pool, rows: int) -> None:
    """1% more: rows/100 predictions, half of them rewarded, and about as many late rewards
    for predictions from before (the previous look counted them without a reward)."""
    before = await pool.fetchval("SELECT max(created_at) FROM predictions")
    await _predict(pool, rows, rows // 100)
    unrewarded = await pool.fetchval(
        "SELECT count(*) FROM predictions p WHERE NOT EXISTS "
        "(SELECT 1 FROM feedback f WHERE f.prediction_id = p.prediction_id)"
    )
    await pool.execute(_MORE_FEEDBACK, before, (rows // 200) / unrewarded)
    await pool.execute("ANALYZE predictions")
    await pool.execute("ANALYZE feedback")


async def _rounds(
    pool: asyncpg.Pool,
    arrays: dict[str, npt.NDArray[Any]],
    experiment: Experiment,
    previous: Gathered | None,
    repeats: int,
) -> tuple[Gathered, dict[str, float], dict[str, float], list[float], list[float]]:
    job_times, numpy_times = [], []
    job: dict[str, float] = {}
    bare: dict[str, float] = {}
    gathered = None
    for _ in range(repeats):
        start = time.perf_counter()
        bare = _numpy(arrays)
        numpy_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        gathered, job = await _job(pool, experiment, previous)
        job_times.append(time.perf_counter() - start)
    assert gathered is not None
    for key in ("effect", "p_value", "ci_low"):
        assert math.isclose(job[key], bare[key], rel_tol=1e-6, abs_tol=1e-9), (key, job, bare)
    # the job's p99 is the upper edge of its 1%-wide log bucket
    assert bare["p99_ms"] <= job["p99_ms"] <= bare["p99_ms"] * 1.0101, (job, bare)
    return gathered, job, bare, job_times, numpy_times


def _figures(job_times: list[float], numpy_times: list[float]) -> dict[str, float]:
    job_s, numpy_s = statistics.median(job_times), statistics.median(numpy_times)
    return {
        "job_seconds": round(job_s, 4),
        "numpy_seconds": round(numpy_s, 3),
        "ratio": round(job_s / numpy_s, 3),
    }


def _numpy(arrays: dict[str, npt.NDArray[Any]]) -> dict[str, float]:
    """The same statistics, bare: per arm counts, errors, p99, reward moments; the mSPRT."""
    arms = {}
    for version in (1, 2):
        mask = arrays["version"] == version
        rewards = arrays["reward"][mask]
        rewards = rewards[~np.isnan(rewards)]
        arms[version] = (
            int(mask.sum()),
            int(arrays["error"][mask].sum()),
            float(np.percentile(arrays["latency_us"][mask], 99)) / 1000.0,
            rewards.size,
            float(rewards.mean()),
            float(rewards.var(ddof=1)),
        )
    (_, _, _, n_a, mean_a, var_a), (_, _, p99, n_b, mean_b, var_b) = arms[1], arms[2]
    effect, variance, tau2 = mean_b - mean_a, var_a / n_a + var_b / n_b, MDE**2
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + tau2 * effect**2 / (
        2 * variance * (variance + tau2)
    )
    half = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2 * math.log(1 / ALPHA) + math.log((variance + tau2) / variance))
    )
    return {
        "effect": effect,
        "p_value": min(1.0, math.exp(-log_ratio)),
        "ci_low": effect - half,
        "p99_ms": p99,
    }


async def e1(rows: int, repeats: int) -> dict[str, Any]:
    """The cold first look and a steady look after 1% more, each against bare numpy."""
    async with (
        common.bench_server() as (server, source),
        common.fresh_database(server, "ml_bench_exp") as url,
    ):
        pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
        try:
            start = time.perf_counter()
            await _fill(pool, rows)
            fill_seconds = time.perf_counter() - start
            experiment = _experiment()
            arrays = await _arrays(pool)
            cold, job, _, job_times, numpy_times = await _rounds(
                pool, arrays, experiment, None, repeats
            )
            cold_figures = _figures(job_times, numpy_times) | {"rows": rows}
            await _more(pool, rows)
            # the first merge: every totals row the cold look counted (the job's next look
            # starts with it; later merges take one interval's rows)
            kept_rows = await pool.fetchval("SELECT count(*) FROM prediction_totals")
            start = time.perf_counter()
            await compact(pool, EXPERIMENT, cold.totals)
            merge = {
                "seconds": round(time.perf_counter() - start, 3),
                "rows_before": kept_rows,
                "rows_after": await pool.fetchval("SELECT count(*) FROM prediction_totals"),
            }
            arrays = await _arrays(pool)
            steady, job, _, job_times, numpy_times = await _rounds(
                pool, arrays, experiment, cold, repeats
            )
            steady_figures = _figures(job_times, numpy_times) | {
                "rows": int(arrays["version"].size),
                "new_predictions": rows // 100,
                "rewards_added": (
                    steady.totals.champion.outcomes + steady.totals.challenger.outcomes
                    - cold.totals.champion.outcomes - cold.totals.challenger.outcomes
                ),
            }  # fmt: skip
            # the steady look is a look from scratch at the same rows, to the last digit
            scratch = await gather(pool, EXPERIMENT, 1, 2, None)
            assert (scratch.champion, scratch.challenger) == (steady.champion, steady.challenger)
            notes = await common.machine_notes(pool, source)
        finally:
            await pool.close()
    return {
        "cold": cold_figures,
        "steady": steady_figures,
        "goal_ratio": 2.0,
        "fill_seconds": round(fill_seconds, 1),
        "first_merge": merge,
        "agree": {k: job[k] for k in ("effect", "p_value", "p99_ms")},
        "notes": notes,
    }


def e2(experiments: int, seed: int = 13) -> list[dict[str, Any]]:
    """The A/A false-positive table, and the power of an A/B with a true effect."""
    rng = np.random.default_rng(seed)
    outcomes, looks = 2_000, np.arange(20, 2_001, 10)
    table = []
    for kind in ("binary", "continuous"):
        shape = (experiments, outcomes)
        if kind == "binary":
            a = (rng.random(shape) < 0.1).astype(np.float64)
            b = (rng.random(shape) < 0.1).astype(np.float64)
            tau2 = 0.02**2
        else:
            a, b = rng.normal(10, 2, shape), rng.normal(10, 2, shape)
            tau2 = 0.2**2
        for alpha in (0.01, 0.05, 0.10):
            start = time.perf_counter()
            msprt = float(ever_rejects(a, b, looks, tau2=tau2, alpha=alpha).mean())
            seconds = time.perf_counter() - start
            table.append(
                {
                    "kind": kind,
                    "alpha": alpha,
                    "msprt_fpr": msprt,
                    "peeking_z_fpr": _peeking_z(a, b, looks, alpha),
                    "bound": round(alpha + 3 * math.sqrt(alpha * (1 - alpha) / experiments), 4),
                    "seconds": round(seconds, 2),
                }
            )
    a = (rng.random((experiments, 5_000)) < 0.10).astype(np.float64)
    b = (rng.random((experiments, 5_000)) < 0.13).astype(np.float64)
    power = ever_rejects(a, b, np.arange(50, 5_001, 50), tau2=0.03**2, alpha=0.05).mean()
    table.append({"kind": "A/B 10% -> 13%, 5,000 per arm", "alpha": 0.05, "power": float(power)})
    return table


def _peeking_z(
    a: npt.NDArray[Any], b: npt.NDArray[Any], looks: npt.NDArray[Any], alpha: float
) -> float:
    n = looks.astype(np.float64)
    means, variances = [], []
    for arm in (a, b):
        sums = np.cumsum(arm, axis=1)[:, looks - 1]
        squares = np.cumsum(arm * arm, axis=1)[:, looks - 1]
        means.append(sums / n)
        variances.append((squares - sums**2 / n) / (n - 1) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(means[1] - means[0]) / np.sqrt(variances[0] + variances[1])
    return float((np.nan_to_num(z) > stats.norm.ppf(1 - alpha / 2)).any(axis=1).mean())


def main(quick: bool) -> dict[str, Any]:
    """Both parts, printed as they finish."""
    rows = 1_000_000 if quick else 10_000_000
    look = common.run(e1(rows, repeats=3 if quick else 5))
    for kind in ("cold", "steady"):
        figures = look[kind]
        print(
            f"E1 {kind} look, {figures['rows']:,} logged predictions: "
            f"job {figures['job_seconds']} s, numpy {figures['numpy_seconds']} s, "
            f"ratio {figures['ratio']}x (goal <= 2x)"
        )
    print(f"E1 agree on {look['agree']}")
    merge = look["first_merge"]
    print(
        f"E1 first merge of the totals the cold look counted: {merge['rows_before']:,} rows "
        f"-> {merge['rows_after']:,} in {merge['seconds']} s (once, before the next look)"
    )
    table = e2(500 if quick else 2_000)
    print("E2 kind         alpha  mSPRT FPR  peeking z FPR  bound")
    for line in table:
        if "power" in line:
            print(f"E2 {line['kind']}: power {line['power']:.3f} at alpha 0.05")
            continue
        print(
            f"E2 {line['kind']:<12} {line['alpha']:<5}  {line['msprt_fpr']:<9.3f}  "
            f"{line['peeking_z_fpr']:<13.3f}  {line['bound']}"
        )
    return {"e1": look, "e2": table}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M predictions, 500 experiments")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = main(args.quick)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
