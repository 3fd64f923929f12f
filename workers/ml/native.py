"""A model's own predictions, the reference a compiled library is certified against.

Each `predict` returns what the compiled library serves for that model, in the same shape:
(n,) for one output, (n, k) for k outputs (multiclass probabilities, multi-output regression).
Every binary classifier gives P(class 1): a random forest's and a two-class softmax's second
column, as the library serves it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.services.artifacts import load_skops_estimator

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class NativeModel:
    """A loaded model: its predictions, feature names and categorical feature indices."""

    format: str
    feature_names: list[str]
    categorical_features: list[int]
    predictor: Callable[[Matrix], Any]
    # False where the library refuses NaN (scikit-learn's GradientBoosting): there is no
    # reference for missing values, and the compiled library's answer for them is unchecked
    accepts_missing: bool = True
    # what computed the reference scores, and its version ("lightgbm 4.7.0")
    reference: str = ""

    def predict(self, rows: npt.ArrayLike) -> Matrix:
        """The model's own scores for an (n, features) matrix, NaN meaning missing."""
        matrix = np.ascontiguousarray(rows, dtype=np.float64)
        out = np.asarray(self.predictor(matrix), dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            return out.reshape(out.shape[0])
        return out


def load_native(path: Path, fmt: str) -> NativeModel:
    """The model in `path` (a ModelFormat) loaded by its own library."""
    if fmt == "lightgbm":
        return _lightgbm(path)
    if fmt == "xgboost-json":
        return _xgboost(path)
    if fmt == "sklearn-skops":
        return _sklearn(path)
    raise ValueError(f"unknown model format {fmt!r}")


def _lightgbm(path: Path) -> NativeModel:
    import lightgbm  # noqa: PLC0415 - seconds to import; only jobs need it

    booster = lightgbm.Booster(model_file=str(path))
    names = [str(name) for name in booster.feature_name()]
    # the training call's categorical_feature, saved as indices or names in the parameters
    declared = booster.params.get("categorical_feature") or []
    categorical = {_feature_index(item, names) for item in _as_list(declared)} - {None}

    def predict(rows: Matrix) -> Any:
        # binary: probabilities, as the compiled library's postprocessor gives; a multiclass
        # objective with two classes: P(class 1), as the library serves it
        out = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
        return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out

    return NativeModel(
        format="lightgbm",
        feature_names=names,
        categorical_features=sorted(i for i in categorical if i is not None),
        predictor=predict,
        reference=f"lightgbm {lightgbm.__version__}",
    )


def _xgboost(path: Path) -> NativeModel:
    data = path.read_bytes()
    learner = json.loads(data).get("learner", {})
    types = learner.get("feature_types") or []
    categorical = [i for i, kind in enumerate(types) if kind == "c"]
    try:
        import xgboost  # noqa: PLC0415 - the optional `xgboost` extra; seconds to import
    except ImportError:
        return _xgboost_gtil(data, learner, categorical)
    booster = xgboost.Booster()
    booster.load_model(bytearray(data))  # a JSON document, read as XGBoost itself reads it
    booster.set_param({"nthread": 1})
    count = int(booster.num_features())
    names = learner.get("feature_names") or [f"f{i}" for i in range(count)]

    def predict(rows: Matrix) -> Any:
        # XGBoost's own arithmetic: features and sums in float32, as it serves the model
        out = booster.inplace_predict(rows, missing=np.nan, validate_features=False)
        return _positive_class(np.asarray(out, dtype=np.float64), _two_class(learner))

    return NativeModel(
        format="xgboost-json",
        feature_names=[str(name) for name in names],
        categorical_features=categorical,
        predictor=predict,
        reference=f"xgboost {xgboost.__version__}",
    )


def _xgboost_gtil(data: bytes, learner: dict[str, Any], categorical: list[int]) -> NativeModel:
    """Without XGBoost (the extra is not installed): Treelite's own interpreter (GTIL) on the
    model Treelite read. That certifies code generation and compilation, not Treelite's
    reading of the JSON, nor XGBoost's float32 arithmetic: the reference says so."""
    import treelite  # noqa: PLC0415

    model = treelite.frontend.from_xgboost_json(data)
    names = learner.get("feature_names") or [f"f{i}" for i in range(int(model.num_feature))]

    def predict(rows: Matrix) -> Any:
        out = treelite.gtil.predict(model, rows, nthread=1)
        return _positive_class(out.reshape(out.shape[0], -1), _two_class(learner))

    return NativeModel(
        format="xgboost-json",
        feature_names=[str(name) for name in names],
        categorical_features=categorical,
        predictor=predict,
        reference=f"treelite.gtil {treelite.__version__} (XGBoost not installed)",
    )


def _two_class(learner: dict[str, Any]) -> bool:
    params = learner.get("learner_model_param", {})
    return str(params.get("num_class", "0")) == "2" and str(params.get("num_target", "1")) == "1"


def _positive_class(out: Matrix, two_class: bool) -> Matrix:
    """A two-class softmax's P(class 1), as the library serves it; other outputs as they are."""
    if two_class and out.ndim == 2 and out.shape[1] == 2:
        return np.ascontiguousarray(out[:, 1])
    return out


def _sklearn(path: Path) -> NativeModel:
    import sklearn  # noqa: PLC0415

    estimator = load_skops_estimator(path)
    kind = type(estimator).__name__
    stored = getattr(estimator, "feature_names_in_", None)
    count = int(estimator.n_features_in_)
    names = [str(name) for name in stored] if stored is not None else []
    flags = getattr(estimator, "is_categorical_", None)
    categorical = [int(i) for i in np.flatnonzero(flags)] if flags is not None else []

    def predict(rows: Matrix) -> Any:
        with warnings.catch_warnings():
            # fitted on a DataFrame, scored on an array: the columns are in the same order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if kind == "IsolationForest":
                # Treelite compiles the standardized outlier score (treelite.sklearn docs)
                return -estimator.score_samples(rows)
            if not hasattr(estimator, "predict_proba"):
                return estimator.predict(rows)
            proba = estimator.predict_proba(rows)
            return proba[:, 1] if proba.shape[1] == 2 else proba

    return NativeModel(
        format="sklearn-skops",
        feature_names=names or [f"x{i}" for i in range(count)],
        categorical_features=categorical,
        predictor=predict,
        accepts_missing=bool(estimator.__sklearn_tags__().input_tags.allow_nan),
        reference=f"scikit-learn {sklearn.__version__}",
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _feature_index(item: Any, names: list[str]) -> int | None:
    """A declared categorical feature as an index: an int, a digit string or a name."""
    if isinstance(item, int):
        return item
    text = str(item)
    if text in names:
        return names.index(text)
    return int(text) if text.isdigit() else None
