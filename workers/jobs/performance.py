"""The performance job: a version's scores in a window against the outcome labels observed
for them (`POST /v1/feedback` with `label`), judged against its validation metrics and the
tier's policy (`domain.performance`). One `performance.checked`, and a `performance.alert`
per metric past a bound, bound to the version that served the window; on a critical alert
the policy's action (demoting a canary) follows, caused by the alert, as drift's does.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import numpy as np

from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.performance import judge, worst
from workers.jobs import inputs
from workers.jobs.drift import served_version
from workers.ml.performance import Performance, measure, task_of
from workers.runner import Context, JobInputError

# labelled predictions of a version in its window: their scores (JSON numbers) and labels
_WINDOW = (
    "SELECT p.score::text AS score, o.label FROM predictions p "
    "JOIN outcomes o ON o.prediction_id = p.prediction_id "
    "WHERE p.name = $1 AND p.version = $2 AND p.environment = $3 AND p.created_at >= $4"
)


def measure_in_child(
    baseline: dict[str, float], scores: list[float], labels: list[float], threshold: float
) -> Performance:
    """Runs in the process pool."""
    score_array = np.asarray(scores, dtype=np.float64)
    label_array = np.asarray(labels, dtype=np.float64)
    task = task_of(baseline, score_array, label_array)
    return measure(task, score_array, label_array, threshold)


async def run(ctx: Context) -> cmd.PerformanceReported:
    """Measure the window, judge it, and decide the check and its alerts."""
    job = ctx.job
    found = await inputs.subject(ctx)
    environment = str(job.params.get("environment", "production"))
    version = inputs.version_of(ctx, found, served_version(ctx, found, environment))
    limits = found.policy.performance
    window_days = float(job.params.get("window_days", limits.window_days))
    scores, labels = await _window(ctx, version.version, environment, window_days)
    if len(scores) < limits.min_labels:
        raise JobInputError(
            f"{len(scores)} predictions of version {version.version} in {environment} have a "
            f"label in the last {window_days:g} days; a check needs {limits.min_labels}"
        )
    threshold = float(version.params.get("decision_threshold", limits.threshold))
    measured = await ctx.pool.run(
        ctx.resources.settings.job_timeout_seconds,
        measure_in_child,
        dict(version.metrics),
        scores,
        labels,
        threshold,
    )
    findings = judge(measured.metrics, version.metrics, limits, found.policy.metric_thresholds)
    base = {k: v for k, v in version.metrics.items() if k in measured.metrics}
    check = ev.PerformanceChecked(
        name=job.name,
        version=version.version,
        environment=environment,
        severity=worst(findings),
        rows=measured.rows,
        window_days=window_days,
        task=measured.task,
        metrics=measured.metrics,
        baseline=base,
        reliability=measured.reliability,
        threshold=threshold if measured.task == "binary" else None,
        job_id=job.job_id,
    )
    alerts = [
        ev.PerformanceAlert(
            name=job.name,
            version=version.version,
            environment=environment,
            metric=finding.metric,
            value=finding.value,
            baseline=finding.baseline,
            threshold=finding.threshold,
            severity=finding.severity,
            rows=measured.rows,
            reason=finding.reason,
            job_id=job.job_id,
        )
        for finding in findings
    ]
    return cmd.PerformanceReported(check=check, alerts=alerts)


async def _window(
    ctx: Context, version: int, environment: str, days: float
) -> tuple[list[float], list[float]]:
    since = ctx.resources.clock() - timedelta(days=days)
    rows = await ctx.resources.pool.fetch(_WINDOW, ctx.job.name, version, environment, since)
    scores: list[float] = []
    labels: list[float] = []
    for row in rows:
        score = msgspec.json.decode(row["score"])
        if not isinstance(score, int | float):
            raise JobInputError(
                f"version {version} has several outputs a prediction: performance monitoring "
                "covers single-output models"
            )
        scores.append(float(score))
        labels.append(row["label"])
    return scores, labels


async def respond(ctx: Context) -> None:
    """The policy's action on the job's worst critical alert, caused by that alert."""
    recorded = await ctx.resources.store.read_stream(model_stream(ctx.job.name))
    critical = [
        r
        for r in recorded
        if isinstance(r.event, ev.PerformanceAlert)
        and r.event.job_id == ctx.job.job_id
        and r.event.severity == "critical"
    ]
    if not critical:
        return
    alert = critical[0]
    assert isinstance(alert.event, ev.PerformanceAlert)
    meta = msgspec.structs.replace(ctx.meta, causation_id=str(alert.event_id))
    await ctx.resources.governance.handle(
        cmd.RespondToPerformance(name=ctx.job.name, alert=alert.event), meta
    )
