"""Live performance of a version: its scores against the outcome labels observed later.

Binary classifiers: AUC (Mann-Whitney on mid-ranks, ties counted half, as roc_auc_score),
precision, recall and accuracy at the operating threshold, Brier score, log loss, and a
reliability table of ten equal-width bins of predicted probability (with the expected
calibration error over them). Regressions: RMSE, MAE, R² and the mean error (bias).
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

Floats = npt.NDArray[np.float64]
RELIABILITY_BINS = 10
# log loss of a probability of exactly 0 or 1 is infinite: clipped as scikit-learn does
_EPS = 1e-15


class Performance(msgspec.Struct, frozen=True, kw_only=True):
    """What a window of labelled predictions says about a version."""

    task: str
    rows: int
    metrics: dict[str, float]
    # per non-empty bin: [lower, upper, rows, mean score, observed rate]
    reliability: list[list[float]] = msgspec.field(default_factory=list)


def task_of(baseline: dict[str, float], scores: Floats, labels: Floats) -> str:
    """ "binary" or "regression": from the validation metrics a version recorded, else from
    the data (0/1 labels and scores within [0, 1] are a classifier's)."""
    if {"auc", "log_loss", "accuracy", "brier", "precision"} & set(baseline):
        return "binary"
    if {"rmse", "mae", "r2"} & set(baseline):
        return "regression"
    binary = np.isin(labels, (0.0, 1.0)).all() and ((scores >= 0) & (scores <= 1)).all()
    return "binary" if binary else "regression"


def measure(task: str, scores: Floats, labels: Floats, threshold: float) -> Performance:
    """The metrics of the task on these rows (runs in the process pool)."""
    if task == "binary":
        metrics, bins = binary(scores, labels, threshold)
        return Performance(task=task, rows=len(scores), metrics=metrics, reliability=bins)
    return Performance(task=task, rows=len(scores), metrics=regression(scores, labels))


def binary(
    scores: Floats, labels: Floats, threshold: float
) -> tuple[dict[str, float], list[list[float]]]:
    """Classifier metrics and the reliability table."""
    positive = labels == 1.0
    chosen = scores >= threshold
    metrics = {
        "brier": float(np.mean((scores - labels) ** 2)),
        "log_loss": _log_loss(scores, positive),
        "accuracy": float(np.mean(chosen == positive)),
        "positive_rate": float(np.mean(positive)),
        "mean_score": float(np.mean(scores)),
    }
    auc = _auc(scores, positive)
    if auc is not None:
        metrics["auc"] = auc
    true_positives = float(np.sum(chosen & positive))
    if chosen.any():
        metrics["precision"] = true_positives / float(np.sum(chosen))
    if positive.any():
        metrics["recall"] = true_positives / float(np.sum(positive))
    bins = reliability(scores, labels)
    metrics["ece"] = float(sum(b[2] * abs(b[3] - b[4]) for b in bins) / len(scores))
    return metrics, bins


def _auc(scores: Floats, positive: npt.NDArray[np.bool_]) -> float | None:
    """Mann-Whitney U over n+ n-: undefined (None) when one class is absent."""
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)  # ties take their mean rank
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _log_loss(scores: Floats, positive: npt.NDArray[np.bool_]) -> float:
    p = np.clip(scores, _EPS, 1 - _EPS)
    return float(-np.mean(np.where(positive, np.log(p), np.log1p(-p))))


def reliability(scores: Floats, labels: Floats, bins: int = RELIABILITY_BINS) -> list[list[float]]:
    """Equal-width bins of predicted probability: [lower, upper, rows, mean score, rate].
    A score on an edge belongs to the bin below it (as scikit-learn's calibration_curve)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(index, minlength=bins)
    score_sums = np.bincount(index, weights=scores, minlength=bins)
    label_sums = np.bincount(index, weights=labels, minlength=bins)
    return [
        [
            float(edges[b]),
            float(edges[b + 1]),
            float(counts[b]),
            float(score_sums[b] / counts[b]),
            float(label_sums[b] / counts[b]),
        ]
        for b in range(bins)
        if counts[b]
    ]


def regression(scores: Floats, labels: Floats) -> dict[str, float]:
    """Regression errors."""
    error = scores - labels
    metrics = {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "bias": float(np.mean(error)),
    }
    spread = float(np.sum((labels - labels.mean()) ** 2))
    if spread > 0:
        metrics["r2"] = 1.0 - float(np.sum(error**2)) / spread
    return metrics
