"""Training: reproducible model bytes, sane holdout metrics, a holdout the compile job can trust."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import skops.io

from app.services.artifacts import inspect_model
from domain.errors import InvalidInput
from workers.ml import demo_data
from workers.ml import profile as profiles
from workers.ml.tabular import features_matrix, read_dataset
from workers.ml.train import TrainOutcome, train

PARAMS = {"num_trees": 30, "exclude": ["age_band"], "holdout_fraction": 0.3}
MODEL_PARAMS = {"lightgbm": {"num_leaves": 15}, "sklearn": {"max_leaf_nodes": 15}}


@cache
def fraud_parquet() -> bytes:
    return demo_data.parquet_bytes(demo_data.fraud_transactions(5_000, 1))


@cache
def trained(kind: str) -> TrainOutcome:
    return train(fraud_parquet(), "is_fraud", PARAMS | MODEL_PARAMS[kind], kind=kind, seed=3)


@pytest.mark.parametrize("kind", ["lightgbm", "sklearn"])
def test_the_same_dataset_params_and_seed_give_the_same_model_bytes(kind: str) -> None:
    again = train(fraud_parquet(), "is_fraud", PARAMS | MODEL_PARAMS[kind], kind=kind, seed=3)
    assert again.model == trained(kind).model
    assert again.profile == trained(kind).profile
    reseeded = train(fraud_parquet(), "is_fraud", PARAMS | MODEL_PARAMS[kind], kind=kind, seed=4)
    assert reseeded.model != trained(kind).model


@pytest.mark.parametrize("kind", ["lightgbm", "sklearn"])
def test_fraud_models_learn_the_signal(kind: str) -> None:
    outcome = trained(kind)
    assert outcome.task == "classification"
    assert outcome.classes == ["0", "1"]
    assert outcome.metrics["auc"] > 0.8
    assert 0.0 < outcome.metrics["log_loss"] < 0.2
    assert outcome.metrics["accuracy"] > 0.95
    assert outcome.num_trees == 30
    assert "age_band" not in outcome.feature_names
    assert outcome.categorical_maps == {"merchant_category": sorted(demo_data.MERCHANTS)}
    assert outcome.train_rows + outcome.holdout_rows.size == 5_000
    # stratified: the holdout keeps the dataset's fraud rate
    fraud = np.asarray(read_dataset(fraud_parquet()).column("is_fraud"))
    assert abs(outcome.holdout_target.mean() - fraud.mean()) < 0.002


@pytest.mark.parametrize("kind", ["lightgbm", "sklearn"])
def test_the_holdout_is_the_shared_encoding_and_the_model_reproduces_its_predictions(
    kind: str,
) -> None:
    outcome = trained(kind)
    table = read_dataset(fraud_parquet()).take(outcome.holdout_rows)
    encoded = features_matrix(table, outcome.feature_names, outcome.categorical_maps)
    np.testing.assert_array_equal(encoded, outcome.holdout)
    assert np.isnan(outcome.holdout).any()  # missing values stay missing
    assert outcome.holdout.flags.c_contiguous
    if kind == "lightgbm":
        booster = lightgbm.Booster(model_str=outcome.model.decode())
        assert booster.feature_name() == outcome.feature_names
        reloaded = booster.predict(outcome.holdout)
    else:
        untrusted = skops.io.get_untrusted_types(data=outcome.model)
        estimator = skops.io.loads(outcome.model, trusted=untrusted)
        reloaded = estimator.predict_proba(outcome.holdout)[:, 1]
    np.testing.assert_array_equal(reloaded, outcome.holdout_predictions)


@pytest.mark.parametrize("kind", ["lightgbm", "sklearn"])
def test_trained_models_pass_the_upload_checks(kind: str, tmp_path: Path) -> None:
    outcome = trained(kind)
    path = tmp_path / "model"
    path.write_bytes(outcome.model)
    info = inspect_model(path, outcome.format)
    assert info.num_trees == outcome.num_trees
    assert info.num_features == len(outcome.feature_names)


def test_the_profile_describes_the_training_rows() -> None:
    outcome = trained("lightgbm")
    profile = profiles.loads(outcome.profile)
    assert profile.rows == outcome.train_rows
    assert profile.feature_names == outcome.feature_names
    assert profile.categorical_maps() == outcome.categorical_maps
    amount = profile.features["amount"]
    assert isinstance(amount, profiles.NumericProfile)
    assert sum(amount.counts) + amount.missing == outcome.train_rows
    assert len(amount.counts) == len(amount.edges) + 1 == 10
    assert len(amount.sample) == min(5_000, outcome.train_rows)
    merchant = profile.features["merchant_category"]
    assert isinstance(merchant, profiles.CategoricalProfile)
    assert sum(merchant.counts) == outcome.train_rows
    flag = profile.features["is_online"]
    assert isinstance(flag, profiles.NumericProfile)
    assert flag.edges == [0.0, 1.0]  # a 0/1 column: repeated quantiles collapse
    assert sum(flag.counts[:2]) == outcome.train_rows


def test_csv_and_parquet_of_the_same_table_train_the_same_model() -> None:
    table = demo_data.credit_applications(2_000, 2)
    params = {"num_trees": 20, "exclude": ["gender"]}
    from_csv = train(demo_data.csv_bytes(table), "defaulted", params, seed=1)
    from_parquet = train(demo_data.parquet_bytes(table), "defaulted", params, seed=1)
    assert from_csv.model == from_parquet.model
    assert from_csv.categorical_maps["employment_type"] == sorted(demo_data.EMPLOYMENT)


@pytest.mark.parametrize("kind", ["lightgbm", "sklearn"])
def test_a_continuous_target_is_a_regression(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "fraud.csv"
    demo_data.write(demo_data.fraud_transactions(2_000, 6), path)
    params = {"num_trees": 20, "exclude": ["is_fraud", "age_band"]}
    outcome = train(path, "amount", params, kind=kind)
    assert outcome.task == "regression"
    assert set(outcome.metrics) == {"rmse", "mae", "r2"}
    assert 0 < outcome.metrics["mae"] <= outcome.metrics["rmse"]
    assert outcome.metrics["rmse"] < 0.5 * outcome.holdout_target.std()
    assert outcome.classes == []


def test_text_labels_name_the_positive_class_second() -> None:
    table = demo_data.credit_applications(1_000, 7)
    labels = np.where(np.asarray(table.column("defaulted")) == 1, "yes", "no")
    table = table.drop_columns(["defaulted"]).append_column("outcome", [labels.tolist()])
    outcome = train(demo_data.parquet_bytes(table), "outcome", {"num_trees": 10}, seed=0)
    assert outcome.classes == ["no", "yes"]
    assert outcome.holdout_target.mean() == pytest.approx(labels.tolist().count("yes") / 1_000, 0.1)


@pytest.mark.parametrize(
    ("target", "params", "message"),
    [
        ("nope", {}, "no target column 'nope'"),
        ("merchant_category", {}, "two target labels, found 3"),
        ("is_fraud", {"features": ["amount", "missing_one"]}, "missing feature columns"),
        ("is_fraud", {"holdout_fraction": 1.5}, "holdout_fraction"),
        ("is_fraud", {"features": ["age_band"], "categorical": []}, "not numeric"),
    ],
)
def test_bad_requests_are_invalid_input(target: str, params: dict, message: str) -> None:
    data = demo_data.csv_bytes(demo_data.fraud_transactions(300, 1))
    with pytest.raises(InvalidInput, match=message):
        train(data, target, params | {"num_trees": 5})


def test_an_unreadable_dataset_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not a readable parquet dataset"):
        train(b"PAR1 not really", "y", {})
    with pytest.raises(InvalidInput):
        train(io.BytesIO(b"").getvalue() + b"a,b\n1", "b", {})
