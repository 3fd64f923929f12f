"""Judging the data quality of live inputs against a version's training profile (pure; the
job measures the window)."""

from __future__ import annotations

import msgspec

from domain.events import Severity
from domain.policy import DataQualityThresholds

_ORDER = {"info": 0, "warning": 1, "critical": 2}


class FeatureQuality(msgspec.Struct, frozen=True, kw_only=True):
    """One feature's inputs in a window, beside its training profile."""

    feature: str
    null_rate: float
    training_null_rate: float
    # numeric features: the share outside the training [min, max]
    out_of_range_rate: float | None = None
    # categorical features: the share of codes training never had
    unseen_rate: float | None = None
    # one value throughout the window where training had several
    constant: bool = False


class QualityFinding(msgspec.Struct, frozen=True, kw_only=True):
    """One limit broken: which check, on which feature, how far, how bad."""

    check: str
    feature: str | None
    value: float
    baseline: float | None
    threshold: float
    severity: Severity
    reason: str


def judge(
    width_mismatch_rate: float, features: list[FeatureQuality], limits: DataQualityThresholds
) -> list[QualityFinding]:
    """Every broken limit, worst first. Rows of another width are always critical: the
    scorer refuses them, so any that are logged mean the log and the version disagree."""
    findings: list[QualityFinding] = []
    if width_mismatch_rate > 0:
        findings.append(
            QualityFinding(
                check="width",
                feature=None,
                value=width_mismatch_rate,
                baseline=None,
                threshold=0.0,
                severity="critical",
                reason=f"{width_mismatch_rate:.2%} of the logged rows have another width",
            )
        )
    for feature in features:
        findings += _feature(feature, limits)
    return sorted(findings, key=lambda f: -_ORDER[f.severity])


def _feature(found: FeatureQuality, limits: DataQualityThresholds) -> list[QualityFinding]:
    name = found.feature
    rising = found.null_rate - found.training_null_rate
    grades = (limits.null_rate_increase_warning, limits.null_rate_increase_critical)
    findings = _graded(
        "null_rate", name, found.null_rate, rising, grades, baseline=found.training_null_rate
    )
    if found.out_of_range_rate is not None:
        grades = (limits.out_of_range_warning, limits.out_of_range_critical)
        findings += _graded(
            "out_of_range", name, found.out_of_range_rate, None, grades, baseline=None
        )
    if found.unseen_rate is not None:
        grades = (limits.unseen_category_warning, limits.unseen_category_critical)
        findings += _graded(
            "unseen_categories", name, found.unseen_rate, None, grades, baseline=None
        )
    if found.constant and limits.constant_feature != "none":
        findings.append(
            QualityFinding(
                check="constant",
                feature=name,
                value=1.0,
                baseline=None,
                threshold=1.0,
                severity=limits.constant_feature,
                reason=f"{name} holds one value throughout the window; it varied in training",
            )
        )
    return findings


def _graded(
    check: str,
    feature: str,
    value: float,
    change: float | None,
    grades: tuple[float, float],
    *,
    baseline: float | None,
) -> list[QualityFinding]:
    measured = value if change is None else change
    warning, critical = grades
    if measured > critical:
        severity: Severity = "critical"
        limit = critical
    elif measured > warning:
        severity, limit = "warning", warning
    else:
        return []
    said = f"{value:.2%}" if baseline is None else f"{value:.2%} (training {baseline:.2%})"
    return [
        QualityFinding(
            check=check,
            feature=feature,
            value=value,
            baseline=baseline,
            threshold=limit,
            severity=severity,
            reason=f"{check} of {feature} is {said}, past {limit:g}",
        )
    ]
