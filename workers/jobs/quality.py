"""The data-quality job: the latest sampled inputs a version served, against its training
profile (workers.ml.quality), judged by the tier's policy (`domain.quality`): one
`data_quality.checked`, and a `data_quality.alert` per broken limit, bound to the version
that served the window. Scheduled beside drift checks; on demand with `POST /v1/jobs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from domain import commands as cmd
from domain import events as ev
from domain.quality import FeatureQuality, judge
from workers.jobs import inputs
from workers.jobs.drift import served_version
from workers.ml.quality import assess
from workers.runner import Context, JobInputError

_WINDOW = (
    "SELECT features FROM predictions WHERE name = $1 AND version = $2 AND environment = $3 "
    "AND features IS NOT NULL ORDER BY created_at DESC LIMIT $4"
)


def assess_in_child(
    profile: str, rows: list[Any], features: list[str]
) -> tuple[float, list[FeatureQuality]]:
    """Runs in the process pool."""
    return assess(Path(profile).read_bytes(), rows, features)


async def run(ctx: Context) -> cmd.DataQualityReported:
    """Assess the window and decide the check and its alerts."""
    job = ctx.job
    found = await inputs.subject(ctx)
    environment = str(job.params.get("environment", "production"))
    version = inputs.version_of(ctx, found, served_version(ctx, found, environment))
    if version.lineage.profile_sha256 is None:
        raise JobInputError(
            f"version {version.version} has no training profile (only trained versions have one)"
        )
    profile = inputs.stored(ctx, version.lineage.profile_sha256, "training profile")
    limits = found.policy.data_quality
    limit = int(job.params.get("window_rows", ctx.resources.settings.drift_window_rows))
    records = await ctx.resources.pool.fetch(_WINDOW, job.name, version.version, environment, limit)
    if len(records) < limits.min_rows:
        raise JobInputError(
            f"the prediction log holds {len(records)} sampled inputs of version "
            f"{version.version} in {environment}; a check needs {limits.min_rows}"
        )
    rows = [msgspec.json.decode(record["features"]) for record in records]
    mismatch, features = await ctx.pool.run(
        ctx.resources.settings.job_timeout_seconds,
        assess_in_child,
        str(profile),
        rows,
        version.feature_names,
    )
    findings = judge(mismatch, features, limits)
    check = ev.DataQualityChecked(
        name=job.name,
        version=version.version,
        environment=environment,
        severity=findings[0].severity if findings else "info",
        rows=len(rows),
        width_mismatch_rate=mismatch,
        features={f.feature: _summary(f) for f in features},
        job_id=job.job_id,
    )
    alerts = [
        ev.DataQualityAlert(
            name=job.name,
            version=version.version,
            environment=environment,
            check=finding.check,
            value=finding.value,
            baseline=finding.baseline,
            threshold=finding.threshold,
            severity=finding.severity,
            rows=len(rows),
            reason=finding.reason,
            feature=finding.feature,
            job_id=job.job_id,
        )
        for finding in findings
    ]
    return cmd.DataQualityReported(check=check, alerts=alerts)


def _summary(found: FeatureQuality) -> dict[str, float]:
    summary = {
        "null_rate": found.null_rate,
        "training_null_rate": found.training_null_rate,
        "constant": float(found.constant),
    }
    if found.out_of_range_rate is not None:
        summary["out_of_range_rate"] = found.out_of_range_rate
    if found.unseen_rate is not None:
        summary["unseen_rate"] = found.unseen_rate
    return summary
