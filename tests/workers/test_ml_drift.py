"""Drift checks: a shifted window is critical, a fresh sample of the same world is not."""

from __future__ import annotations

import itertools
import json
from functools import cache

import numpy as np
import pytest
from scipy import stats
from scipy.stats import contingency

from domain.errors import InvalidInput
from domain.policy import DriftThresholds
from workers.ml import demo_data
from workers.ml import profile as profiles
from workers.ml.drift import check_drift, psi
from workers.ml.tabular import features_matrix, numeric_column

FEATURES = [
    name
    for name in demo_data.fraud_transactions(1, 0).column_names
    if name not in ("is_fraud", "age_band")
]
MAPS = {"merchant_category": sorted(demo_data.MERCHANTS)}


@cache
def reference() -> profiles.Profile:
    return profiles.build(demo_data.fraud_transactions(8_000, 1), FEATURES, MAPS, seed=0)


def test_an_unshifted_window_is_info_and_a_shifted_one_critical() -> None:
    calm = check_drift(profiles.dumps(reference()), demo_data.fraud_transactions(4_000, 2))
    assert calm.severity == "info", {k: (f.statistic, f.value) for k, f in calm.features.items()}
    assert calm.alerts() == []
    drifted = check_drift(reference(), demo_data.fraud_transactions(4_000, 2, shift=1.0))
    assert drifted.severity == "critical"
    flagged = dict(drifted.alerts())
    assert flagged["country_risk"].severity == "critical"
    assert flagged["merchant_category"].statistic in ("psi", "cramers_v_balanced")
    assert "avg_amount_30d" not in flagged  # a column the shift does not touch
    worst = drifted.alerts()[0][1]
    assert worst.severity == "critical"
    assert worst.threshold is not None
    assert worst.value >= worst.threshold


def test_a_mild_shift_warns_where_the_thresholds_say() -> None:
    window = demo_data.fraud_transactions(4_000, 2, shift=0.3)
    default = check_drift(reference(), window)
    strict = check_drift(reference(), window, thresholds=DriftThresholds(psi_warning=0.01))
    lenient = check_drift(
        reference(),
        window,
        thresholds=DriftThresholds(psi_warning=5, psi_critical=9, ks_warning=5, ks_critical=9),
    )
    assert default.features["tx_velocity_1h"].severity != "info"
    assert strict.features["avg_amount_30d"].severity == "info"
    assert strict.features["amount"].severity == "warning"
    assert lenient.severity == "info"


def test_numeric_statistics_match_direct_scipy_and_numpy() -> None:
    window = demo_data.fraud_transactions(3_000, 5, shift=0.5)
    report = check_drift(reference(), window)
    for name in ("amount", "distance_from_home_km", "card_age_days", "hour"):
        feature = reference().features[name]
        assert isinstance(feature, profiles.NumericProfile)
        values = numeric_column(window, name)
        valid = values[~np.isnan(values)]
        # PSI over [missing, bins...], bins (-inf, e1], (e1, e2], ..., (ek, inf)
        bounds = np.array([-np.inf, *feature.edges, np.inf])
        actual = [np.isnan(values).sum()] + [
            ((valid > lo) & (valid <= hi)).sum() for lo, hi in itertools.pairwise(bounds)
        ]
        p = np.array([feature.missing, *feature.counts]) / feature.rows
        q = np.array(actual) / values.size
        p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
        drift = report.features[name]
        assert drift.psi == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
        ks = stats.ks_2samp(feature.sample, valid)
        assert drift.ks == pytest.approx(ks.statistic, rel=1e-12)
        assert drift.wasserstein == pytest.approx(stats.wasserstein_distance(feature.sample, valid))
        assert drift.missing_rate_window == pytest.approx(np.isnan(values).mean())


def test_categorical_statistics_match_direct_scipy() -> None:
    window = demo_data.fraud_transactions(3_000, 5, shift=0.7)
    drift = check_drift(reference(), window).features["merchant_category"]
    feature = reference().features["merchant_category"]
    assert isinstance(feature, profiles.CategoricalProfile)
    merchants = window.column("merchant_category").to_pylist()
    actual = np.array([merchants.count(c) for c in feature.categories])
    expected = np.array(feature.counts)
    chi2 = stats.chi2_contingency(np.vstack([expected, actual]), correction=False)
    assert drift.chi2 == pytest.approx(chi2.statistic)
    assert drift.chi2_pvalue == pytest.approx(chi2.pvalue)
    # the textbook V of the same table, as scipy computes it
    table = np.vstack([expected, actual])
    assert drift.cramers_v == pytest.approx(
        contingency.association(table, method="cramer", correction=False), rel=1e-12
    )
    # the judged V: the window against the reference scaled to the window's size
    balanced = np.vstack([expected / expected.sum() * actual.sum(), actual])
    balanced_chi2 = stats.chi2_contingency(balanced, correction=False).statistic
    assert drift.cramers_v_balanced == pytest.approx(np.sqrt(balanced_chi2 / balanced.sum()))
    assert drift.cramers_v != pytest.approx(drift.cramers_v_balanced, rel=1e-3)
    p, q = expected / expected.sum(), actual / actual.sum()
    assert drift.psi == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert drift.unseen_rate == 0.0


def test_unseen_categories_and_vanished_features_drift() -> None:
    window = demo_data.fraud_transactions(2_000, 6).to_pydict()
    window["merchant_category"] = ["casino"] * 1_000 + window["merchant_category"][1_000:]
    window["country_risk"] = [None] * 2_000
    report = check_drift(reference(), {k: np.array(v) for k, v in window.items()})
    assert report.features["merchant_category"].unseen_rate == 0.5
    assert report.features["merchant_category"].severity == "critical"
    gone = report.features["country_risk"]
    assert gone.severity == "critical"
    assert gone.missing_rate_window == 1.0
    assert gone.ks is None


def test_a_window_of_model_inputs_reads_categories_by_code() -> None:
    window = demo_data.fraud_transactions(3_000, 7, shift=0.4)
    raw = check_drift(reference(), window)
    matrix = features_matrix(window, FEATURES, MAPS)
    encoded = check_drift(reference(), {name: matrix[:, i] for i, name in enumerate(FEATURES)})
    assert encoded.to_json() == raw.to_json()


def test_the_report_serializes_and_summarizes() -> None:
    report = check_drift(reference(), demo_data.fraud_transactions(2_000, 8, shift=1.0))
    document = json.loads(report.to_json())
    assert document["severity"] == "critical"
    assert document["rows"] == 2_000
    assert document["reference_rows"] == 8_000
    summary = report.summary()
    assert set(summary["amount"]) >= {"psi", "ks", "wasserstein"}
    assert set(summary["merchant_category"]) >= {"psi", "cramers_v", "cramers_v_balanced"}


def test_psi_is_zero_for_identical_counts_and_grows_with_the_shift() -> None:
    counts = np.array([10, 20, 30, 40])
    assert psi(counts, counts * 3) == pytest.approx(0.0)
    assert 0 < psi(counts, np.array([20, 20, 30, 30])) < psi(counts, np.array([40, 30, 20, 10]))


def test_missing_features_and_empty_windows_are_clear_errors() -> None:
    window = demo_data.fraud_transactions(100, 1).drop_columns(["amount", "hour"])
    with pytest.raises(InvalidInput, match="window lacks features of the profile: amount, hour"):
        check_drift(reference(), window)
    with pytest.raises(InvalidInput, match="no rows"):
        check_drift(reference(), demo_data.fraud_transactions(0, 1))
    with pytest.raises(InvalidInput, match="not a feature profile"):
        check_drift(b'{"rows": 1}', window)
