"""Judging live performance: a version's metrics on labelled predictions against its
validation metrics and the policy (pure; the statistics are computed by the job)."""

from __future__ import annotations

import msgspec

from domain.events import Severity
from domain.policy import PerformanceThresholds, Threshold

_ORDER = {"info": 0, "warning": 1, "critical": 2}


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One metric past a bound: what it was, against what, how bad."""

    metric: str
    value: float
    baseline: float | None
    threshold: float
    severity: Severity
    reason: str


def judge(
    live: dict[str, float],
    baseline: dict[str, float],
    limits: PerformanceThresholds,
    bounds: dict[str, Threshold],
) -> list[Finding]:
    """Every metric past a limit, worst first: drops (rises, ratios) from the validation
    value, and the policy's bounds on the metric itself (critical: a gate it would fail)."""
    findings = [
        *_drop("auc", live, baseline, limits.auc_drop_warning, limits.auc_drop_critical),
        *_drop(
            "precision",
            live,
            baseline,
            limits.precision_drop_warning,
            limits.precision_drop_critical,
        ),
        *_rise("brier", live, baseline, limits.brier_rise_warning, limits.brier_rise_critical),
        *_ratio("rmse", live, baseline, limits),
        *_ratio("mae", live, baseline, limits),
        *_bounds(live, bounds),
    ]
    return sorted(findings, key=lambda f: -_ORDER[f.severity])


def worst(findings: list[Finding]) -> Severity:
    """The check's severity: its worst finding's, or info."""
    return findings[0].severity if findings else "info"


def _drop(
    metric: str, live: dict[str, float], base: dict[str, float], warning: float, critical: float
) -> list[Finding]:
    if metric not in live or metric not in base:
        return []
    change = base[metric] - live[metric]
    return _graded(metric, live[metric], base[metric], change, (warning, critical), how="below")


def _rise(
    metric: str, live: dict[str, float], base: dict[str, float], warning: float, critical: float
) -> list[Finding]:
    if metric not in live or metric not in base:
        return []
    change = live[metric] - base[metric]
    return _graded(metric, live[metric], base[metric], change, (warning, critical), how="above")


def _ratio(
    metric: str, live: dict[str, float], base: dict[str, float], limits: PerformanceThresholds
) -> list[Finding]:
    if metric not in live or not base.get(metric):
        return []
    ratio = live[metric] / base[metric]
    grades = (limits.error_ratio_warning, limits.error_ratio_critical)
    return _graded(metric, live[metric], base[metric], ratio, grades, how="times")


def _graded(
    metric: str,
    value: float,
    was: float,
    change: float,
    grades: tuple[float, float],
    *,
    how: str,
) -> list[Finding]:
    """A finding when `change` passes a grade (critical first); none within both."""
    warning, critical = grades
    if change > critical:
        severity: Severity = "critical"
        limit = critical
    elif change > warning:
        severity, limit = "warning", warning
    else:
        return []
    if how == "times":
        said = f"{change:.2f}x validation ({was:.4g}) > {limit:g}x"
    else:
        said = f"{change:.4f} {how} validation ({was:.4f}) > {limit:g}"
    return [
        Finding(
            metric=metric,
            value=value,
            baseline=was,
            threshold=limit,
            severity=severity,
            reason=f"{metric} {value:.4g} is {said}",
        )
    ]


def _bounds(live: dict[str, float], bounds: dict[str, Threshold]) -> list[Finding]:
    findings = []
    for metric, bound in sorted(bounds.items()):
        value = live.get(metric)
        if value is None or bound.admits(value):
            continue
        limit = bound.min if bound.min is not None and value < bound.min else bound.max
        assert limit is not None
        reason = f"{metric} {value:.4g} is outside the policy's {bound.describe()}"
        findings.append(
            Finding(
                metric=metric,
                value=value,
                baseline=None,
                threshold=limit,
                severity="critical",
                reason=reason,
            )
        )
    return findings
