"""Fairness checks: a biased scorer fails, a fair one passes, the figures are fairlearn's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    selection_rate,
)
from sklearn.metrics import roc_auc_score

from domain.errors import InvalidInput
from workers.ml.compliance import MISSING_GROUP, check_compliance

ROWS = 6_000


def scored(bias: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and a group: the scores of group "b" are raised by `bias`."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b", "c"]), ROWS, p=[0.5, 0.3, 0.2])
    truth = (rng.random(ROWS) < 0.3).astype(int)
    score = np.clip(0.25 + 0.4 * truth + rng.normal(0, 0.15, ROWS), 0, 1)
    return truth, np.clip(score + bias * (group == "b"), 0, 1), group


def test_a_fair_scorer_passes() -> None:
    truth, score, group = scored(bias=0.0)
    report = check_compliance(truth, score, {"group": group})
    assert report.passed, report.failures
    assert report.failures == []
    assert set(report.features["group"].groups) == {"a", "b", "c"}


def test_a_biased_scorer_fails_and_every_broken_limit_is_named() -> None:
    truth, score, group = scored(bias=0.3)
    report = check_compliance(truth, score, {"group": group})
    assert not report.passed
    failed = " ".join(report.failures)
    assert "group: demographic parity difference" in failed
    assert "group: equalized odds difference" in failed
    assert "group: demographic parity ratio" in failed
    # a stricter threshold can pass what a looser one fails, and limits are the caller's
    lenient = check_compliance(
        truth,
        score,
        {"group": group},
        max_demographic_parity_difference=1.0,
        max_equalized_odds_difference=1.0,
        min_demographic_parity_ratio=0.0,
    )
    assert lenient.passed


@pytest.mark.parametrize(("bias", "threshold"), [(0.0, 0.5), (0.2, 0.5), (0.1, 0.35)])
def test_the_figures_are_fairlearns(bias: float, threshold: float) -> None:
    truth, score, group = scored(bias, seed=4)
    report = check_compliance(truth, score, {"group": group}, threshold=threshold)
    predicted = (score >= threshold).astype(int)
    feature = report.features["group"]
    by = {"sensitive_features": group}
    expected_dpd = demographic_parity_difference(truth, predicted, **by)
    assert feature.demographic_parity_difference == pytest.approx(expected_dpd, abs=1e-12)
    expected_ratio = demographic_parity_ratio(truth, predicted, **by)
    assert feature.demographic_parity_ratio == pytest.approx(expected_ratio, abs=1e-12)
    expected_eod = equalized_odds_difference(truth, predicted, **by)
    assert feature.equalized_odds_difference == pytest.approx(expected_eod, abs=1e-12)
    rates = MetricFrame(
        metrics=selection_rate, y_true=truth, y_pred=predicted, sensitive_features=group
    ).by_group
    for name, metrics in feature.groups.items():
        assert metrics.selection_rate == pytest.approx(rates[name], abs=1e-12)
        members = group == name
        assert metrics.count == members.sum()
        assert metrics.auc == pytest.approx(roc_auc_score(truth[members], score[members]))
    assert report.overall.auc == pytest.approx(roc_auc_score(truth, score))


def test_a_group_with_one_class_has_no_auc_and_does_not_crash() -> None:
    truth, score, group = scored(bias=0.0)
    group = group.astype(object)
    group[:40] = "tiny"
    truth[:40] = 0
    group[40:50] = None
    report = check_compliance(truth, score, {"group": group})
    tiny = report.features["group"].groups["tiny"]
    assert tiny.auc is None
    assert tiny.true_positive_rate is None
    assert tiny.false_positive_rate is not None
    assert report.features["group"].groups[MISSING_GROUP].count == 10


def test_several_sensitive_features_are_judged_separately() -> None:
    truth, score, group = scored(bias=0.3)
    other = np.random.default_rng(9).choice(["x", "y"], ROWS)
    report = check_compliance(truth, score, {"group": group, "other": other})
    assert set(report.features) == {"group", "other"}
    assert all(failure.startswith("group:") for failure in report.failures)
    assert set(report.metrics()) == {
        f"{name}.{metric}"
        for name in ("group", "other")
        for metric in (
            "demographic_parity_difference",
            "demographic_parity_ratio",
            "equalized_odds_difference",
        )
    }


def test_the_report_renders_as_json_and_markdown() -> None:
    truth, score, group = scored(bias=0.3)
    report = check_compliance(truth, score, {"group": group})
    document = json.loads(report.to_json())
    assert document["passed"] is False
    assert document["features"]["group"]["groups"]["b"]["count"] == (group == "b").sum()
    assert report.to_json() == check_compliance(truth, score, {"group": group}).to_json()
    markdown = report.to_markdown()
    assert "**FAILED**" in markdown
    assert "| b | " in markdown
    assert "- failed: group: demographic parity difference" in markdown


@pytest.mark.parametrize(
    ("truth", "score", "sensitive", "message"),
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], {"g": ["a", "b", "a"]}, "0/1 labels"),
        ([0, 1, 1], [0.1, 0.2], {"g": ["a", "b", "a"]}, "one number per row"),
        ([0, 1, 1], [0.1, 0.2, 0.3], {"g": ["a", "b"]}, "has 2 values for 3 rows"),
        ([0, 1, 1], [0.1, 0.2, 0.3], {}, "at least one sensitive feature"),
    ],
)
def test_bad_inputs_are_invalid_input(truth, score, sensitive, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_compliance(truth, score, sensitive)
