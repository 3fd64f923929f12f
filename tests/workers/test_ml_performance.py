"""Live performance statistics, cross-checked against scikit-learn on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics
from sklearn.calibration import calibration_curve

from workers.ml.performance import binary, measure, regression, reliability, task_of


def _classifier_window(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random(rows)
    labels = (rng.random(rows) < truth).astype(np.float64)
    # rounded scores: many ties, which the AUC must count half as roc_auc_score does
    scores = np.clip(np.round(truth + rng.normal(0, 0.15, rows), 2), 0.0, 1.0)
    return scores, labels


@pytest.mark.parametrize(("rows", "seed", "threshold"), [(2_000, 1, 0.5), (333, 7, 0.3)])
def test_classifier_metrics_equal_scikit_learns(rows: int, seed: int, threshold: float) -> None:
    scores, labels = _classifier_window(rows, seed)
    found, bins = binary(scores, labels, threshold)
    chosen = (scores >= threshold).astype(int)
    assert found["auc"] == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert found["precision"] == pytest.approx(metrics.precision_score(labels, chosen), abs=1e-12)
    assert found["recall"] == pytest.approx(metrics.recall_score(labels, chosen), abs=1e-12)
    assert found["accuracy"] == pytest.approx(metrics.accuracy_score(labels, chosen), abs=1e-12)
    assert found["brier"] == pytest.approx(metrics.brier_score_loss(labels, scores), abs=1e-12)
    assert found["log_loss"] == pytest.approx(
        metrics.log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15)), rel=1e-9
    )
    rate, mean_score = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    assert [b[4] for b in bins] == pytest.approx(rate, abs=1e-12)
    assert [b[3] for b in bins] == pytest.approx(mean_score, abs=1e-12)
    assert sum(b[2] for b in bins) == rows
    ece = sum(b[2] * abs(b[3] - b[4]) for b in bins) / rows
    assert found["ece"] == pytest.approx(ece)


def test_one_class_windows_have_no_auc_and_nothing_chosen_has_no_precision() -> None:
    scores = np.array([0.1, 0.2, 0.3])
    found, _ = binary(scores, np.zeros(3), threshold=0.5)
    assert "auc" not in found and "precision" not in found and "recall" not in found
    assert found["accuracy"] == 1.0


def test_reliability_bins_take_an_edge_into_the_bin_below_and_one_into_the_last() -> None:
    bins = reliability(np.array([0.0, 0.1, 0.5, 1.0]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert [(b[0], b[1], b[2]) for b in bins] == [(0.0, 0.1, 2.0), (0.4, 0.5, 1.0), (0.9, 1.0, 1.0)]
    assert [b[3] for b in bins] == pytest.approx([0.05, 0.5, 1.0])


def test_regression_errors_equal_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(10, 3, 1_000)
    scores = labels + rng.normal(0.5, 1.0, 1_000)
    found = regression(scores, labels)
    rmse = np.sqrt(metrics.mean_squared_error(labels, scores))
    assert found["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert found["mae"] == pytest.approx(metrics.mean_absolute_error(labels, scores), rel=1e-12)
    assert found["r2"] == pytest.approx(metrics.r2_score(labels, scores), rel=1e-12)
    assert found["bias"] == pytest.approx(np.mean(scores - labels), rel=1e-12)


def test_the_task_follows_the_validation_metrics_else_the_data() -> None:
    probabilities, zeros_ones = np.array([0.2, 0.9]), np.array([0.0, 1.0])
    assert task_of({"auc": 0.9}, probabilities, zeros_ones) == "binary"
    assert task_of({"rmse": 1.0}, probabilities, zeros_ones) == "regression"
    assert task_of({}, probabilities, zeros_ones) == "binary"
    assert task_of({}, np.array([3.5, 7.0]), np.array([3.0, 8.0])) == "regression"
    assert measure("regression", np.array([1.0, 2.0]), np.array([1.0, 4.0]), 0.5).task == (
        "regression"
    )
