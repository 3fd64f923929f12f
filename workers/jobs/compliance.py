"""The compliance job: fairness by sensitive group (fairlearn) against the tier's policy.

The model is scored by its own library on the evaluation dataset the request names; the
report (JSON, with a Markdown rendering) is stored and its digest recorded in the event the
production gate reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from domain import commands as cmd
from domain import events as ev
from workers.jobs import inputs
from workers.ml import tabular
from workers.ml.compliance import ComplianceReport, check_compliance
from workers.ml.native import load_native
from workers.runner import Context, JobInputError


class ComplianceTask(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the child process needs, by value."""

    artifact: str
    format: str
    dataset: str
    target: str
    features: list[str]
    categories: dict[str, list[str]]
    sensitive: list[str]
    threshold: float
    limits: dict[str, float]


def compliance_in_child(task: ComplianceTask) -> ComplianceReport:
    """Runs in the process pool: score the dataset with the model, then judge fairness."""
    table = tabular.read_dataset(Path(task.dataset))
    tabular.require(table, [task.target, *task.sensitive])
    scores = load_native(Path(task.artifact), task.format).predict(
        tabular.features_matrix(table, task.features, task.categories)
    )
    if scores.ndim == 2:
        if scores.shape[1] != 2:
            raise JobInputError("fairness is checked for binary classifiers only")
        scores = np.ascontiguousarray(scores[:, 1])
    groups = {name: tabular.column(table, name) for name in task.sensitive}
    truth = tabular.column(table, task.target)
    return check_compliance(truth, scores, groups, threshold=task.threshold, **task.limits)


async def run(ctx: Context) -> cmd.ComplianceReported:
    """Check the version's fairness on the dataset the request names."""
    job = ctx.job
    found = await inputs.subject(ctx)
    version = inputs.version_of(ctx, found)
    dataset = inputs.stored(ctx, job.params.get("dataset_sha256"), "dataset")
    sensitive = _names(job.params.get("sensitive_features") or found.model.sensitive_features)
    policy = found.policy
    limits = {
        "max_demographic_parity_difference": policy.max_demographic_parity_difference,
        "max_equalized_odds_difference": policy.max_equalized_odds_difference,
        "min_demographic_parity_ratio": policy.min_demographic_parity_ratio,
    }
    task = ComplianceTask(
        artifact=str(ctx.resources.artifacts.path_of(version.artifact_sha256)),
        format=version.format,
        dataset=str(dataset),
        target=str(job.params["target"]),
        features=version.feature_names,
        categories=inputs.categories(version),
        sensitive=sensitive,
        threshold=_threshold(job.params),
        limits=limits,
    )
    report = await ctx.pool.run(
        ctx.resources.settings.job_timeout_seconds, compliance_in_child, task
    )
    report_sha256 = await inputs.put(ctx, report.to_json())
    markdown_sha256 = await inputs.put(ctx, report.to_markdown().encode())
    checked = ev.ComplianceChecked(
        name=job.name,
        version=version.version,
        passed=report.passed,
        report_sha256=report_sha256,
        policy_version=found.policy_version,
        metrics=report.metrics(),
        job_id=job.job_id,
    )

    details = {"failures": report.failures, "markdown_sha256": markdown_sha256}
    return cmd.ComplianceReported(check=checked, details=details)


def _names(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise JobInputError("sensitive_features must be a non-empty list of column names")
    return list(value)


def _threshold(params: dict[str, Any]) -> float:
    value = params.get("threshold", 0.5)
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise JobInputError("params.threshold must be a number within [0, 1]")
    return float(value)
