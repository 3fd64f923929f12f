"""The drift job: a window of live inputs against the version's training reference.

Per feature PSI, KS, chi-square / Cramér's V and Wasserstein (workers.ml.drift), judged by the
tier's policy; one `drift.detected` per feature at warning or worse, bound to the version that
served the window. On a critical alert the policy's action (demoting a canary) follows, caused
by the alert, as a follow-up that a retry repeats safely.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.policy import DriftThresholds
from workers.jobs import inputs
from workers.ml import tabular
from workers.ml.drift import DriftReport, check_drift
from workers.runner import Context, JobInputError

# fewer sampled inputs than this say little about a distribution
MIN_WINDOW_ROWS = 50


def drift_in_child(
    profile: str,
    window: str | dict[str, list[float | None]],
    thresholds: DriftThresholds,
    features: list[str],
) -> DriftReport:
    """Runs in the process pool: `window` is a dataset file or logged inputs by feature."""
    table = tabular.read_dataset(Path(window)) if isinstance(window, str) else _columns(window)
    return check_drift(Path(profile).read_bytes(), table, thresholds=thresholds, features=features)


def _columns(window: dict[str, list[float | None]]) -> dict[str, object]:
    return {
        name: np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        for name, values in window.items()
    }


async def run(ctx: Context) -> cmd.DriftReported:
    """Compare the window with the reference and decide the check and its alerts."""
    job = ctx.job
    found = await inputs.subject(ctx)
    environment = str(job.params.get("environment", "production"))
    version = inputs.version_of(ctx, found, served_version(ctx, found, environment))
    if version.lineage.profile_sha256 is None:
        raise JobInputError(
            f"version {version.version} has no training reference profile (only trained "
            "versions have one)"
        )
    profile = inputs.stored(ctx, version.lineage.profile_sha256, "reference profile")
    digest = job.params.get("dataset_sha256")
    if digest is None:
        window: str | dict[str, list[float | None]] = await _logged_window(
            ctx, version.version, environment, version.feature_names
        )
        source = "predictions"
    else:
        window = str(inputs.stored(ctx, digest, "dataset"))
        source = f"dataset:{digest}"
    report = await ctx.pool.run(
        ctx.resources.settings.job_timeout_seconds,
        drift_in_child,
        str(profile),
        window,
        found.policy.drift,
        version.feature_names,
    )
    report_sha256 = await inputs.put(ctx, report.to_json())
    check = ev.DriftChecked(
        name=job.name,
        version=version.version,
        severity=report.severity,
        rows=report.rows,
        report_sha256=report_sha256,
        source=source,
        environment=environment,
        features=report.summary(),
        job_id=job.job_id,
    )
    alerts = [
        ev.DriftDetected(
            name=job.name,
            version=version.version,
            statistic=feature.statistic,
            value=feature.value,
            threshold=feature.threshold if feature.threshold is not None else 0.0,
            severity=feature.severity,
            feature=name,
            environment=environment,
            job_id=job.job_id,
            report_sha256=report_sha256,
        )
        for name, feature in report.alerts()
    ]
    return cmd.DriftReported(check=check, alerts=alerts)


async def _logged_window(
    ctx: Context, version: int, environment: str, features: list[str]
) -> dict[str, list[float | None]]:
    """The latest sampled inputs the version served in the environment, by feature."""
    limit = int(ctx.job.params.get("window_rows", ctx.resources.settings.drift_window_rows))
    rows = await ctx.resources.pool.fetch(
        "SELECT features FROM predictions WHERE name = $1 AND version = $2 AND environment = $3 "
        "AND features IS NOT NULL ORDER BY created_at DESC LIMIT $4",
        ctx.job.name,
        version,
        environment,
        limit,
    )
    if len(rows) < MIN_WINDOW_ROWS:
        raise JobInputError(
            f"the prediction log holds {len(rows)} sampled inputs of version {version} in "
            f"{environment}; a drift check needs at least {MIN_WINDOW_ROWS}"
        )
    columns: dict[str, list[float | None]] = {name: [] for name in features}
    for row in rows:
        logged = msgspec.json.decode(row["features"])
        # inputs are logged as the model's input row (a list in feature order) or by name
        values = logged if isinstance(logged, list) else [logged.get(n) for n in features]
        for name, value in zip(features, values, strict=True):
            columns[name].append(value if isinstance(value, int | float) else None)
    return columns


def served_version(ctx: Context, found: inputs.Subject, environment: str) -> int | None:
    """The version whose inputs are checked: the one named, else the environment's
    challenger (a canary is what drift must catch), else its champion."""
    if ctx.job.version is not None:
        return ctx.job.version
    slot = found.model.deployments.get(environment)
    if slot is None:
        raise JobInputError(f"nothing serves in {environment}: name the version to check")
    return slot.challenger if slot.challenger is not None else slot.champion


async def respond(ctx: Context) -> None:
    """The policy's action on the job's worst critical alert, caused by that alert."""
    recorded = await ctx.resources.store.read_stream(model_stream(ctx.job.name))
    critical = [
        r
        for r in recorded
        if isinstance(r.event, ev.DriftDetected)
        and r.event.job_id == ctx.job.job_id
        and r.event.severity == "critical"
    ]
    if not critical:
        return
    alert = critical[0]
    assert isinstance(alert.event, ev.DriftDetected)
    meta = msgspec.structs.replace(ctx.meta, causation_id=str(alert.event_id))
    await ctx.resources.governance.handle(
        cmd.RespondToDrift(name=ctx.job.name, alert=alert.event), meta
    )
