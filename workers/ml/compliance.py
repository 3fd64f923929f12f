"""Fairness of a binary scorer by sensitive group (fairlearn), judged against a policy's limits.

One MetricFrame per sensitive feature computes every group metric; the disparities are derived
from its by-group table exactly as fairlearn's `demographic_parity_difference`/`_ratio` and
`equalized_odds_difference` do (between groups, worst case), instead of three more frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from domain.errors import InvalidInput

MISSING_GROUP = "(missing)"
_ENCODER = msgspec.json.Encoder()
_HEADER = "| group | rows | positives | selection rate | TPR | FPR | AUC |"
_RULE = "|---|---|---|---|---|---|---|"


class GroupMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """How the scorer treats one group (or everyone)."""

    count: int
    positives: int
    selection_rate: float
    # None where undefined: no positives (TPR), no negatives (FPR), one class (AUC)
    true_positive_rate: float | None
    false_positive_rate: float | None
    auc: float | None


class FeatureFairness(msgspec.Struct, frozen=True, kw_only=True):
    """The groups of one sensitive feature and the disparities between them."""

    groups: dict[str, GroupMetrics]
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float


class ComplianceReport(msgspec.Struct, frozen=True, kw_only=True):
    """The fairness evidence for one version: every figure, the limits, and what failed."""

    passed: bool
    failures: list[str]
    rows: int
    threshold: float
    limits: dict[str, float]
    overall: GroupMetrics
    features: dict[str, FeatureFairness]

    def to_json(self) -> bytes:
        """The report as JSON bytes (the artifact whose digest goes into the event)."""
        return _ENCODER.encode(self)

    def metrics(self) -> dict[str, float]:
        """Flat disparity figures, `feature.metric`, for the ComplianceChecked event."""
        flat: dict[str, float] = {}
        for name, feature in self.features.items():
            flat[f"{name}.demographic_parity_difference"] = feature.demographic_parity_difference
            flat[f"{name}.demographic_parity_ratio"] = feature.demographic_parity_ratio
            flat[f"{name}.equalized_odds_difference"] = feature.equalized_odds_difference
        return flat

    def to_markdown(self) -> str:
        """The report as Markdown, for the model dossier."""
        lines = [
            "## Fairness",
            "",
            f"**{'PASSED' if self.passed else 'FAILED'}** on {self.rows} rows, "
            f"decision threshold {self.threshold:g}.",
            "",
            *(f"- failed: {failure}" for failure in self.failures),
            *([""] if self.failures else []),
            "| limit | value |",
            "|---|---|",
            *(f"| {name.replace('_', ' ')} | {value:g} |" for name, value in self.limits.items()),
        ]
        for name, feature in self.features.items():
            lines += [
                "",
                f"### {_cell(name)}",
                "",
                f"demographic parity difference {feature.demographic_parity_difference:.4f}, "
                f"ratio {feature.demographic_parity_ratio:.4f}; "
                f"equalized odds difference {feature.equalized_odds_difference:.4f}",
                "",
                _HEADER,
                _RULE,
                *(_row(group, m) for group, m in feature.groups.items()),
            ]
        lines += ["", "### All rows", "", _HEADER, _RULE, _row("all", self.overall)]
        return "\n".join(lines) + "\n"


def _row(group: str, m: GroupMetrics) -> str:
    rates = (m.selection_rate, m.true_positive_rate, m.false_positive_rate, m.auc)
    cells = " | ".join("n/a" if v is None else f"{v:.4f}" for v in rates)
    return f"| {_cell(group)} | {m.count} | {m.positives} | {cells} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def check_compliance(
    y_true: Any,
    y_score: Any,
    sensitive: Mapping[str, Any],
    *,
    threshold: float = 0.5,
    max_demographic_parity_difference: float = 0.1,
    max_equalized_odds_difference: float = 0.1,
    min_demographic_parity_ratio: float = 0.8,
) -> ComplianceReport:
    """Group metrics of `y_score >= threshold` by each sensitive feature, judged against limits."""
    truth = _binary(y_true)
    score = np.asarray(y_score, dtype=np.float64).ravel()
    if score.size != truth.size or np.isnan(score).any():
        raise InvalidInput("y_score must be one number per row of y_true, without NaN")
    if not sensitive:
        raise InvalidInput("name at least one sensitive feature")
    predicted = (score >= threshold).astype(np.int64)
    judged = {
        name: _feature(truth, predicted, score, _groups(values, truth.size, name))
        for name, values in sensitive.items()
    }
    features = {name: fairness for name, (fairness, _) in judged.items()}
    limits = {
        "max_demographic_parity_difference": max_demographic_parity_difference,
        "max_equalized_odds_difference": max_equalized_odds_difference,
        "min_demographic_parity_ratio": min_demographic_parity_ratio,
    }
    failures = [
        failure
        for name, feature in features.items()
        for failure in _failures(name, feature, limits)
    ]
    return ComplianceReport(
        passed=not failures,
        failures=failures,
        rows=int(truth.size),
        threshold=threshold,
        limits=limits,
        overall=next(iter(judged.values()))[1],
        features=features,
    )


def _binary(y_true: Any) -> npt.NDArray[np.int64]:
    truth = np.asarray(y_true).ravel()
    if truth.size == 0:
        raise InvalidInput("no rows to check")
    values = np.unique(truth)
    if not np.isin(values, [0, 1]).all():
        raise InvalidInput(f"y_true must hold 0/1 labels, found {values[:5].tolist()}")
    return truth.astype(np.int64)


def _groups(values: Any, rows: int, name: str) -> npt.NDArray[np.str_]:
    raw = np.asarray(values).ravel()
    if raw.size != rows:
        raise InvalidInput(f"sensitive feature {name!r} has {raw.size} values for {rows} rows")
    if raw.dtype.kind in "US":  # text arrays cannot hold a missing value
        return raw.astype(str)
    # None, or NaN (the one value unequal to itself); np.where widens the text for the label
    missing = np.frompyfunc(lambda v: v is None or v != v, 1, 1)(raw).astype(bool)  # noqa: PLR0124
    labels: npt.NDArray[np.str_] = np.where(missing, MISSING_GROUP, raw.astype(str))
    return labels


def _stats(
    truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64], score: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Every figure of one group (a MetricFrame metric: it receives the group's rows)."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - slow import

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    positives = int(truth.sum())
    negatives = truth.size - positives
    hits = int((predicted & truth).sum())
    selected = int(predicted.sum())
    both = positives > 0 and negatives > 0
    return {
        "count": truth.size,
        "positives": positives,
        "selection_rate": selected / truth.size,
        "true_positive_rate": hits / positives if positives else np.nan,
        "false_positive_rate": (selected - hits) / negatives if negatives else np.nan,
        "auc": float(roc_auc_score(truth, score)) if both else np.nan,
    }


def _feature(
    truth: npt.NDArray[np.int64],
    predicted: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    groups: npt.NDArray[np.str_],
) -> tuple[FeatureFairness, GroupMetrics]:
    """One sensitive feature's fairness, and the overall figures MetricFrame computes with it."""
    from fairlearn.metrics import MetricFrame  # noqa: PLC0415 - slow import

    # one metric returning every figure: one pass over each group instead of one per figure
    frame = MetricFrame(
        metrics={"stats": _stats},
        y_true=truth,
        y_pred=predicted,
        sensitive_features=groups,
        sample_params={"stats": {"score": score}},
    )
    column = frame.by_group["stats"]
    by_group = {str(group): _group_metrics(column[group]) for group in column.index}
    selection = np.array([m.selection_rate for m in by_group.values()])
    tpr = _spread([m.true_positive_rate for m in by_group.values()])
    fpr = _spread([m.false_positive_rate for m in by_group.values()])
    top = selection.max()
    fairness = FeatureFairness(
        groups=by_group,
        demographic_parity_difference=float(top - selection.min()),
        # nobody selected in any group is parity, not a division by zero
        demographic_parity_ratio=float(selection.min() / top) if top > 0 else 1.0,
        equalized_odds_difference=max(tpr, fpr),
    )
    return fairness, _group_metrics(frame.overall["stats"])


def _spread(values: list[float | None]) -> float:
    """Max minus min over the groups where the rate is defined (as fairlearn skips NaN)."""
    defined = [v for v in values if v is not None]
    return float(max(defined) - min(defined)) if defined else 0.0


def _group_metrics(stats: Mapping[str, Any]) -> GroupMetrics:
    def rate(key: str) -> float | None:
        value = float(stats[key])
        return None if np.isnan(value) else value

    return GroupMetrics(
        count=int(stats["count"]),
        positives=int(stats["positives"]),
        selection_rate=float(stats["selection_rate"]),
        true_positive_rate=rate("true_positive_rate"),
        false_positive_rate=rate("false_positive_rate"),
        auc=rate("auc"),
    )


def _failures(name: str, feature: FeatureFairness, limits: Mapping[str, float]) -> list[str]:
    checks = (
        ("demographic parity difference", feature.demographic_parity_difference, ">",
         limits["max_demographic_parity_difference"]),
        ("equalized odds difference", feature.equalized_odds_difference, ">",
         limits["max_equalized_odds_difference"]),
        ("demographic parity ratio", feature.demographic_parity_ratio, "<",
         limits["min_demographic_parity_ratio"]),
    )  # fmt: skip
    return [
        f"{name}: {label} {value:.4f} {op} {limit:g}"
        for label, value, op, limit in checks
        if (value > limit if op == ">" else value < limit)
    ]
