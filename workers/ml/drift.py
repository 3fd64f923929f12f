"""Drift of a window of live inputs from a version's training profile, feature by feature.

Numeric features: PSI on the profile's quantile bins (missing values are a bin of their own, so a
feature that stops arriving drifts), two-sample KS and Wasserstein distance against the profile's
sample. Categorical features: PSI on the categories and a chi-square test of the reference x window
table with its Cramér's V (the textbook statistic), judged by the balanced V (the same table with
the reference rescaled to the window's size, so the judgement does not move with the ratio of the
two sizes). Severity comes from PSI and KS, or PSI and balanced V; the p-values are reported but
not judged (at 100,000 rows every difference is significant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from domain.errors import InvalidInput
from domain.events import Severity
from domain.policy import DriftThresholds
from workers.ml import profile as profiles
from workers.ml import tabular

# stands in for an empty bucket: PSI's logarithm is undefined at 0
PSI_EPSILON = 1e-4
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
Counts = npt.NDArray[np.int64]
_ENCODER = msgspec.json.Encoder()


class FeatureDrift(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One feature's drift statistics and the severity its worst statistic reached."""

    kind: Literal["numeric", "categorical"]
    severity: Severity
    # the statistic that set the severity (when info: the one closest to its warning level)
    statistic: str
    value: float
    # the level it reached (None when info)
    threshold: float | None
    psi: float
    missing_rate_reference: float
    missing_rate_window: float
    ks: float | None = None
    ks_pvalue: float | None = None
    wasserstein: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    # textbook Cramér's V of the 2 x k table: sqrt(chi2 / (n (min(2, k) - 1)))
    cramers_v: float | None = None
    # V with both rows rescaled to equal size, sqrt(1/2 sum (p-q)^2/(p+q)): what the policy's
    # cramers_v thresholds judge
    cramers_v_balanced: float | None = None
    # share of window values that are not among the reference categories
    unseen_rate: float | None = None


class DriftReport(msgspec.Struct, frozen=True, kw_only=True):
    """A window compared with a training profile: each feature and the worst severity."""

    severity: Severity
    rows: int
    reference_rows: int
    thresholds: DriftThresholds
    features: dict[str, FeatureDrift]

    def to_json(self) -> bytes:
        """The report as JSON bytes (the artifact whose digest goes into the event)."""
        return _ENCODER.encode(self)

    def summary(self) -> dict[str, dict[str, float]]:
        """The judged statistics of each feature, for the DriftChecked event."""
        keys = (
            *("psi", "ks", "cramers_v", "cramers_v_balanced"),
            *("wasserstein", "missing_rate_window"),
        )
        return {
            name: {k: v for k in keys if (v := getattr(feature, k)) is not None}
            for name, feature in self.features.items()
        }

    def alerts(self) -> list[tuple[str, FeatureDrift]]:
        """The features at warning or critical, worst first (one DriftDetected each)."""
        flagged = [(name, f) for name, f in self.features.items() if f.severity != "info"]
        return sorted(flagged, key=lambda item: -SEVERITIES.index(item[1].severity))


def check_drift(
    profile: bytes | profiles.Profile | Mapping[str, Any],
    window: tabular.Columns,
    *,
    thresholds: DriftThresholds | None = None,
    features: Sequence[str] | None = None,
) -> DriftReport:
    """Compare a window (a table of raw values, or of model inputs) with a training profile.

    A categorical column of text is matched by category name; a numeric one is taken as the
    category codes the model receives (`features_matrix`).
    """
    reference = profiles.loads(profile)
    limits = thresholds or DriftThresholds()
    names = list(features) if features is not None else reference.feature_names
    unknown = [name for name in names if name not in reference.features]
    if unknown:
        raise InvalidInput(f"the profile has no features {', '.join(unknown)}")
    absent = [name for name in names if name not in tabular.column_names(window)]
    if absent:
        raise InvalidInput(f"the window lacks features of the profile: {', '.join(absent)}")
    rows = tabular.row_count(window)
    if rows == 0:
        raise InvalidInput("the window has no rows")
    results = {}
    for name in names:
        feature = reference.features[name]
        if isinstance(feature, profiles.NumericProfile):
            results[name] = _numeric(feature, tabular.numeric_column(window, name), limits)
        else:
            results[name] = _categorical(feature, tabular.column(window, name), limits)
    worst = max((SEVERITIES.index(f.severity) for f in results.values()), default=0)
    return DriftReport(
        severity=SEVERITIES[worst],
        rows=rows,
        reference_rows=reference.rows,
        thresholds=limits,
        features=results,
    )


def psi(expected: Counts, actual: Counts, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two count vectors over the same buckets."""
    p = np.clip(expected / max(int(expected.sum()), 1), epsilon, None)
    q = np.clip(actual / max(int(actual.sum()), 1), epsilon, None)
    return float(np.sum((q - p) * np.log(q / p)))


def cramers_v(chi2: float, observed: Counts) -> float:
    """Cramér's V of a contingency table (rows x columns) from its chi-square statistic."""
    rows, columns = observed.shape
    n, k = int(observed.sum()), min(rows, columns) - 1
    return float(np.sqrt(chi2 / (n * k))) if n and k else 0.0


def balanced_cramers_v(expected: Counts, actual: Counts) -> float:
    """Cramér's V of the window against the reference rescaled to the window's size.

    On the raw 2 x k table V shrinks with the window/reference size ratio; rescaling makes it
    the same for a 1,000-row window as for a 100,000-row one: sqrt(1/2 sum (p-q)^2/(p+q)).
    """
    p = expected / max(int(expected.sum()), 1)
    q = actual / max(int(actual.sum()), 1)
    present = (p + q) > 0
    return float(np.sqrt(0.5 * np.sum((p - q)[present] ** 2 / (p + q)[present])))


def _numeric(
    feature: profiles.NumericProfile, values: tabular.Matrix, limits: DriftThresholds
) -> FeatureDrift:
    from scipy import stats  # noqa: PLC0415 - slow import

    missing = np.isnan(values)
    valid = values[~missing] if missing.any() else values
    edges = np.asarray(feature.edges, dtype=np.float64)
    bins = np.bincount(np.searchsorted(edges, valid, side="left"), minlength=edges.size + 1)
    expected = np.array([feature.missing, *feature.counts], dtype=np.int64)
    actual = np.array([values.size - valid.size, *bins], dtype=np.int64)
    figures: dict[str, Any] = {"psi": psi(expected, actual)}
    if feature.sample and valid.size:
        sample = np.asarray(feature.sample, dtype=np.float64)
        # asymptotic: "exact" is quadratic in the sizes, and at these sizes the same to 1e-3
        ks = stats.ks_2samp(sample, valid, method="asymp")
        figures |= {"ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
        figures["wasserstein"] = float(stats.wasserstein_distance(sample, valid))
    judged = {"psi": (limits.psi_warning, limits.psi_critical)}
    if "ks" in figures:
        judged["ks"] = (limits.ks_warning, limits.ks_critical)
    return _judge("numeric", figures, judged, feature.missing / max(feature.rows, 1), actual)


def _categorical(
    feature: profiles.CategoricalProfile, values: Any, limits: DriftThresholds
) -> FeatureDrift:
    from scipy import stats  # noqa: PLC0415 - slow import

    if tabular.is_text(values) or values.null_count == len(values):
        found = tabular.codes(values, feature.categories)
        missing = int(values.null_count)
    else:
        found = tabular.numeric(values, "window")
        missing = int(np.isnan(found).sum())
        in_range = (found >= 0) & (found < len(feature.categories)) & (found == np.floor(found))
        found = np.where(in_range, found, np.nan)
    known = found[~np.isnan(found)].astype(np.int64)
    other = found.size - known.size - missing
    # buckets: missing, values past the reference's categories, then each category
    expected = np.array([feature.missing, feature.other, *feature.counts], dtype=np.int64)
    actual = np.array(
        [missing, other, *np.bincount(known, minlength=len(feature.categories))], dtype=np.int64
    )
    figures: dict[str, Any] = {
        "psi": psi(expected, actual),
        "cramers_v_balanced": balanced_cramers_v(expected, actual),
    }
    observed = np.vstack([expected, actual])
    observed = observed[:, observed.sum(axis=0) > 0]
    if observed.shape[1] > 1:
        chi2 = stats.chi2_contingency(observed, correction=False)
        figures |= {"chi2": float(chi2.statistic), "chi2_pvalue": float(chi2.pvalue)}
    else:
        figures |= {"chi2": 0.0, "chi2_pvalue": 1.0}
    figures["cramers_v"] = cramers_v(figures["chi2"], observed)
    figures["unseen_rate"] = other / max(found.size, 1)
    judged = {
        "psi": (limits.psi_warning, limits.psi_critical),
        "cramers_v_balanced": (limits.cramers_v_warning, limits.cramers_v_critical),
    }
    return _judge("categorical", figures, judged, feature.missing / max(feature.rows, 1), actual)


def _judge(
    kind: Literal["numeric", "categorical"],
    figures: dict[str, Any],
    judged: dict[str, tuple[float, float]],
    missing_reference: float,
    actual: Counts,
) -> FeatureDrift:
    def rank(name: str) -> tuple[int, float]:
        warning, critical = judged[name]
        value = figures[name]
        level = 2 if value >= critical else 1 if value >= warning else 0
        return level, value / warning if warning > 0 else value

    worst = max(judged, key=rank)
    level = rank(worst)[0]
    return FeatureDrift(
        kind=kind,
        severity=SEVERITIES[level],
        statistic=worst,
        value=figures[worst],
        threshold=judged[worst][level - 1] if level else None,
        missing_rate_reference=missing_reference,
        missing_rate_window=int(actual[0]) / max(int(actual.sum()), 1),
        **figures,
    )
