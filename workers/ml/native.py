"""A model's own predictions, the reference a compiled library is certified against.

Each `predict` returns what the compiled library returns for that model, in the same shape:
(n,) for one output, (n, k) for k outputs (multiclass probabilities; both class probabilities
of a binary random forest, since Treelite keeps a forest's per-class averages).
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

# forests average per-class leaf fractions; Treelite compiles every class, even for two
_FORESTS = frozenset({"RandomForestClassifier", "ExtraTreesClassifier"})


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
        # binary: probabilities, as the compiled library's postprocessor gives
        return booster.predict(rows, num_threads=1)

    return NativeModel(
        format="lightgbm",
        feature_names=names,
        categorical_features=sorted(i for i in categorical if i is not None),
        predictor=predict,
    )


def _xgboost(path: Path) -> NativeModel:
    # There is no XGBoost here (it is not a dependency): the reference for an XGBoost JSON
    # model is Treelite's own interpreter (GTIL) on the model Treelite read from the JSON.
    # That certifies code generation and compilation, not Treelite's reading of the JSON.
    import treelite  # noqa: PLC0415

    data = path.read_bytes()
    model = treelite.frontend.from_xgboost_json(data)
    learner = json.loads(data).get("learner", {})
    names = learner.get("feature_names") or [f"f{i}" for i in range(int(model.num_feature))]
    types = learner.get("feature_types") or []

    def predict(rows: Matrix) -> Any:
        out = treelite.gtil.predict(model, rows, nthread=1)
        return out.reshape(out.shape[0], -1)

    return NativeModel(
        format="xgboost-json",
        feature_names=[str(name) for name in names],
        categorical_features=[i for i, kind in enumerate(types) if kind == "c"],
        predictor=predict,
    )


def _sklearn(path: Path) -> NativeModel:
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
            positive_only = proba.shape[1] == 2 and kind not in _FORESTS
            return proba[:, 1] if positive_only else proba

    return NativeModel(
        format="sklearn-skops",
        feature_names=names or [f"x{i}" for i in range(count)],
        categorical_features=categorical,
        predictor=predict,
        accepts_missing=bool(estimator.__sklearn_tags__().input_tags.allow_nan),
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
