"""Training: a LightGBM or scikit-learn tree ensemble on an uploaded dataset, reproducibly.

The same dataset, parameters and seed give the same model bytes: LightGBM runs deterministic on
one thread, and the skops archive is rewritten with stable member names and timestamps.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from domain.errors import InvalidInput
from workers.ml import profile as profiles
from workers.ml import tabular

Kind = Literal["lightgbm", "sklearn"]
Task = Literal["classification", "regression"]
OWN_PARAMS = ("task", "num_trees", "holdout_fraction", "features", "exclude", "categorical")
_TREE_ALIASES = ("num_iterations", "n_estimators", "num_boost_round", "max_iter")
_LIGHTGBM_FIXED = {"deterministic": True, "force_row_wise": True, "num_threads": 1}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, kw_only=True)
class TrainOutcome:
    """A trained model, its holdout evaluation and the reference profile of its features."""

    model: bytes
    format: Literal["lightgbm", "sklearn-skops"]
    task: Task
    feature_names: list[str]
    categorical_maps: dict[str, list[str]]
    # for classification, the target's labels: [negative, positive]
    classes: list[str]
    metrics: dict[str, float]
    num_trees: int
    params: dict[str, Any]
    profile: bytes
    train_rows: int
    # the holdout, encoded as the model expects (features_matrix), for the parity check
    holdout: npt.NDArray[np.float64]
    holdout_target: npt.NDArray[np.float64]
    # the model's own output on the holdout: probability of the positive class, or the value
    holdout_predictions: npt.NDArray[np.float64]
    # positions of the holdout rows in the dataset (sensitive columns for compliance)
    holdout_rows: npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Plan:
    task: Task
    target: str
    features: list[str]
    categorical: list[str]
    num_trees: int
    holdout_fraction: float
    model_params: dict[str, Any]


def train(
    dataset: Path | bytes,
    target: str,
    params: dict[str, Any],
    *,
    kind: Kind = "lightgbm",
    seed: int = 0,
    fmt: tabular.DatasetFormat | None = None,
) -> TrainOutcome:
    """Fit a model of `kind` on a CSV/Parquet dataset and evaluate it on a stratified holdout."""
    table = tabular.read_dataset(dataset, fmt)
    plan = _plan(table, target, params)
    labels, classes = _target(tabular.column(table, target), plan.task)
    maps = {name: tabular.categories_of(tabular.column(table, name)) for name in plan.categorical}
    matrix = tabular.features_matrix(table, plan.features, maps)
    fit_rows, holdout_rows = _split(labels, plan, seed)
    if kind not in ("lightgbm", "sklearn"):
        raise InvalidInput(f"unknown model kind {kind!r}; expected lightgbm or sklearn")
    fitted = _fit_lightgbm if kind == "lightgbm" else _fit_sklearn
    model, fmt_name, trees, predict = fitted(matrix[fit_rows], labels[fit_rows], plan, seed)
    holdout = np.ascontiguousarray(matrix[holdout_rows])
    predictions = predict(holdout)
    reference = profiles.build(table.take(fit_rows), plan.features, maps, seed=seed)
    return TrainOutcome(
        model=model,
        format=fmt_name,
        task=plan.task,
        feature_names=plan.features,
        categorical_maps=maps,
        classes=classes,
        metrics=evaluate(plan.task, labels[holdout_rows], predictions),
        num_trees=trees,
        params=_recorded(plan, kind, seed),
        profile=profiles.dumps(reference),
        train_rows=int(fit_rows.size),
        holdout=holdout,
        holdout_target=labels[holdout_rows],
        holdout_predictions=predictions,
        holdout_rows=holdout_rows,
    )


def _plan(table: Any, target: str, params: dict[str, Any]) -> _Plan:
    if target not in table.column_names:
        raise InvalidInput(f"the dataset has no target column {target!r}")
    own = {key: params[key] for key in OWN_PARAMS if key in params}
    model_params = {k: v for k, v in params.items() if k not in OWN_PARAMS}
    trees = [model_params.pop(alias) for alias in _TREE_ALIASES if alias in model_params]
    excluded = {target, *own.get("exclude", [])}
    features = list(own.get("features") or [c for c in table.column_names if c not in excluded])
    if not features:
        raise InvalidInput("no feature columns left to train on")
    if target in features:
        raise InvalidInput(f"the target {target!r} cannot also be a feature")
    tabular.require(table, features)
    declared = own.get("categorical")
    categorical = (
        list(declared)
        if declared is not None
        else [name for name in features if tabular.is_text(table.column(name))]
    )
    task = own.get("task") or _guess_task(table.column(target))
    fraction = float(own.get("holdout_fraction", 0.2))
    if task not in ("classification", "regression") or not 0.0 < fraction < 1.0:
        raise InvalidInput("task must be classification or regression; holdout_fraction in (0, 1)")
    return _Plan(
        task=task,
        target=target,
        features=features,
        categorical=[name for name in features if name in categorical],
        num_trees=int(own.get("num_trees", trees[0] if trees else 100)),
        holdout_fraction=fraction,
        model_params=model_params,
    )


def _guess_task(values: Any) -> Task:
    """Text, booleans and numbers with at most two distinct values are labels; else a quantity."""
    if tabular.is_text(values) or pa.types.is_boolean(values.type):
        return "classification"
    distinct = pc.count_distinct(values).as_py()
    return "classification" if distinct <= 2 else "regression"


def _target(values: Any, task: Task) -> tuple[npt.NDArray[np.float64], list[str]]:
    if values.null_count:
        raise InvalidInput(f"the target has {values.null_count} missing values")
    if task == "regression":
        return tabular.numeric(values, "target"), []
    classes = tabular.categories_of(values, limit=3)
    if len(classes) != 2:
        raise InvalidInput(f"binary classification needs two target labels, found {len(classes)}")
    # numeric labels order numerically ("0" < "1"), others alphabetically: the second is positive
    if all(_is_number(label) for label in classes):
        classes.sort(key=float)
    encoded = tabular.codes(values, classes)
    return encoded, classes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split(
    labels: npt.NDArray[np.float64], plan: _Plan, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - slow import

    rows = np.arange(labels.size, dtype=np.int64)
    stratify = labels if plan.task == "classification" else None
    try:
        fit, holdout = train_test_split(
            rows, test_size=plan.holdout_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise InvalidInput(f"cannot split a holdout: {error}") from error
    # sorted: the model must not depend on the shuffle's order, only on which rows
    return np.sort(fit), np.sort(holdout)


Predict = Any  # Callable[[Matrix], Matrix]


def _fit_lightgbm(
    matrix: tabular.Matrix, labels: tabular.Matrix, plan: _Plan, seed: int
) -> tuple[bytes, Literal["lightgbm"], int, Predict]:
    import lightgbm  # noqa: PLC0415 - slow import

    params = {
        "objective": "binary" if plan.task == "classification" else "regression",
        "verbosity": -1,
        "seed": seed,
        **plan.model_params,
        **_LIGHTGBM_FIXED,
    }
    categorical = [plan.features.index(name) for name in plan.categorical]
    data = lightgbm.Dataset(
        matrix, label=labels, feature_name=plan.features, categorical_feature=categorical
    )
    try:
        booster = lightgbm.train(params, data, num_boost_round=plan.num_trees)
    except lightgbm.basic.LightGBMError as error:
        raise InvalidInput(f"LightGBM refused the parameters: {error}") from error

    def predict(rows: tabular.Matrix) -> tabular.Matrix:
        return np.asarray(booster.predict(rows), dtype=np.float64)

    return booster.model_to_string().encode(), "lightgbm", int(booster.num_trees()), predict


def _fit_sklearn(
    matrix: tabular.Matrix, labels: tabular.Matrix, plan: _Plan, seed: int
) -> tuple[bytes, Literal["sklearn-skops"], int, Predict]:
    import skops.io  # type: ignore[import-untyped]  # noqa: PLC0415 - slow import
    from sklearn import ensemble  # noqa: PLC0415 - slow import
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415

    estimator_class = (
        ensemble.HistGradientBoostingClassifier
        if plan.task == "classification"
        else ensemble.HistGradientBoostingRegressor
    )
    mask = [name in plan.categorical for name in plan.features]
    # early stopping would carve its own validation split and vary the tree count
    settings = {"early_stopping": False, **plan.model_params}
    try:
        estimator = estimator_class(
            max_iter=plan.num_trees, categorical_features=mask, random_state=seed, **settings
        )
        # one thread, as LightGBM: a job runs in a pool of processes, and OpenMP threads
        # spinning against each other on a busy machine made a 1 s fit take 4 s
        with threadpool_limits(limits=1, user_api="openmp"):
            y = labels.astype(np.int64) if plan.task == "classification" else labels
            estimator.fit(matrix, y)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"scikit-learn refused the parameters: {error}") from error

    def predict(rows: tabular.Matrix) -> tabular.Matrix:
        with threadpool_limits(limits=1, user_api="openmp"):
            if plan.task == "classification":
                return np.asarray(estimator.predict_proba(rows)[:, 1], dtype=np.float64)
            return np.asarray(estimator.predict(rows), dtype=np.float64)

    trees = int(estimator.n_iter_) * int(estimator.n_trees_per_iteration_)
    return stable_skops(skops.io.dumps(estimator)), "sklearn-skops", trees, predict


def stable_skops(archive: bytes) -> bytes:
    """A skops archive renumbered by first use, with fixed timestamps (same model, same bytes).

    skops names array members and identifies shared objects by their `id()`, and stamps the
    current time; renumbering keeps which nodes share an object, which is all `id()` meant.
    """
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        schema = json.loads(source.read("schema.json"))
        renamed: dict[str, str] = {}
        identities: dict[int, int] = {}
        stack: list[Any] = [schema]
        while stack:  # iterative, children in order, so numbers follow the schema's order
            node = stack.pop()
            if isinstance(node, dict):
                member = node.get("file")
                if isinstance(member, str) and member in source.namelist():
                    suffix = member.rsplit(".", 1)[-1]
                    node["file"] = renamed.setdefault(member, f"{len(renamed)}.{suffix}")
                if isinstance(node.get("__id__"), int):
                    node["__id__"] = identities.setdefault(node["__id__"], len(identities) + 1)
                stack.extend(reversed(list(node.values())))
            elif isinstance(node, list):
                stack.extend(reversed(node))
        members = {new: source.read(old) for old, new in renamed.items()}
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED) as target:
        for name, data in [
            ("schema.json", json.dumps(schema, indent=2).encode()),
            *members.items(),
        ]:
            target.writestr(zipfile.ZipInfo(name, date_time=_ZIP_EPOCH), data)
    return output.getvalue()


def evaluate(
    task: Task, truth: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Holdout metrics: AUC, log loss and accuracy, or RMSE, MAE and R²."""
    from sklearn import metrics  # noqa: PLC0415 - slow import

    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(truth, predicted))),
            "mae": float(metrics.mean_absolute_error(truth, predicted)),
            "r2": float(metrics.r2_score(truth, predicted)),
        }
    scores = {
        "log_loss": float(
            metrics.log_loss(truth, np.clip(predicted, 1e-15, 1 - 1e-15), labels=[0, 1])
        ),
        "accuracy": float(metrics.accuracy_score(truth, predicted >= 0.5)),
        "positive_rate": float(truth.mean()),
    }
    if np.unique(truth).size == 2:  # AUC is undefined on a one-class holdout
        scores["auc"] = float(metrics.roc_auc_score(truth, predicted))
    return scores


def _recorded(plan: _Plan, kind: Kind, seed: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "seed": seed,
        "task": plan.task,
        "target": plan.target,
        "num_trees": plan.num_trees,
        "holdout_fraction": plan.holdout_fraction,
        "features": plan.features,
        "categorical": plan.categorical,
        **plan.model_params,
    }
