"""Compiling models to shared libraries, the parity certificate, and the library loader."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import skops.io
import xgboost
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier

from app.scoring.library import CompiledLibrary, LibraryRefused
from domain.policy import DEFAULT_POLICIES
from workers.ml.compile import (
    FOREST_DEFINE,
    CompileOutcome,
    build,
    certificate_rows,
    certify,
    compile_model,
    generate,
    load_treelite,
)
from workers.ml.native import load_native

FEATURES = 6
CATEGORICAL = 4


def make_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with NaNs and a categorical column (codes 0-7), and a binary label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    x[:, CATEGORICAL] = rng.integers(0, 8, size=rows)
    signal = np.nan_to_num(x[:, 0]) + np.isin(x[:, CATEGORICAL], [1, 3, 6]) - 0.5 * x[:, 1]
    x[rng.random(x.shape) < 0.1] = np.nan
    return x, (signal + rng.normal(scale=0.3, size=rows) > 0.4).astype(float)


@pytest.fixture(scope="module")
def lightgbm_binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 30-tree binary LightGBM model trained on NaNs and a categorical feature; a holdout."""
    x, y = make_data(3000, seed=1)
    params = {"objective": "binary", "num_leaves": 15, "seed": 1, "deterministic": True}
    data = lightgbm.Dataset(x[:2000], y[:2000], categorical_feature=[CATEGORICAL])
    booster = lightgbm.train(params | {"verbose": -1}, data, num_boost_round=30)
    path = tmp_path_factory.mktemp("lgb") / "model.txt"
    booster.save_model(path)
    return path, x[2000:]


@pytest.fixture(scope="module")
def binary_outcome(
    lightgbm_binary: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> CompileOutcome:
    """The binary model compiled and certified on its holdout, with zero tolerance."""
    model, holdout = lightgbm_binary
    workdir = tmp_path_factory.mktemp("lgb-build")
    return compile_model(model, "lightgbm", workdir, holdout=holdout, tolerance=0.0)


@pytest.fixture
def compiled_binary(binary_outcome: CompileOutcome) -> tuple[Path, str]:
    """The binary model's library and its digest."""
    return Path(binary_outcome.library_path), binary_outcome.library_sha256


def test_lightgbm_binary_with_nans_and_categorical_is_exact(
    lightgbm_binary: tuple[Path, np.ndarray], binary_outcome: CompileOutcome
) -> None:
    model, holdout = lightgbm_binary
    outcome = binary_outcome

    certificate = outcome.certificate
    assert certificate.passed and certificate.max_abs_diff == 0.0
    assert certificate.categorical_features == [CATEGORICAL]
    # holdout, its NaN copies and the split probes
    assert certificate.rows_checked > 2 * len(holdout) and certificate.nan_rows > len(holdout)
    library_bytes = Path(outcome.library_path).read_bytes()
    assert outcome.library_sha256 == hashlib.sha256(library_bytes).hexdigest()
    assert (
        outcome.compiler.startswith(("cc", "gcc", "clang", "Apple")) and outcome.compile_seconds > 0
    )
    assert "-O3" in outcome.flags and not any("march" in flag for flag in outcome.flags)

    library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    booster = lightgbm.Booster(model_file=str(model))
    expected = booster.predict(holdout)
    assert (library.num_feature, library.num_output) == (FEATURES, 1)
    assert np.array_equal(library.predict_batch(holdout), expected)
    # a JSON body arrives as a list of floats; NaN means missing there too
    assert library.predict_one(holdout[0].tolist()) == expected[0]
    assert expected.min() > 0.0 and expected.max() < 1.0  # probabilities, not margins


def test_lightgbm_regression_certified_on_generated_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, FEATURES))  # no NaN in training: LightGBM reads NaN as 0.0
    y = 3 * x[:, 0] - x[:, 2] ** 2 + rng.normal(scale=0.1, size=1500)
    booster = lightgbm.train(
        {"objective": "regression", "num_leaves": 15, "seed": 2, "verbose": -1},
        lightgbm.Dataset(x, y),
        num_boost_round=30,
    )
    model = tmp_path / "regression.txt"
    booster.save_model(model)

    # three translation units: the batch path goes through them a block of rows at a time
    outcome = compile_model(model, "lightgbm", tmp_path / "build", tolerance=0.0, parallel_comp=3)

    assert outcome.certificate.passed and outcome.certificate.max_abs_diff == 0.0
    assert outcome.certificate.nan_rows > 0 and outcome.certificate.categorical_features == []
    assert "-DML_UNIT_BLOCKS" in outcome.flags
    library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    rows = rng.normal(size=(200, FEATURES))  # more than one block, the last one partial
    assert np.array_equal(library.predict_batch(rows), booster.predict(rows))


def test_generated_rows_probe_every_threshold_and_category(
    lightgbm_binary: tuple[Path, np.ndarray],
) -> None:
    model = load_treelite(lightgbm_binary[0], "lightgbm")
    rows = certificate_rows(model, None).rows

    nodes = [n for tree in json.loads(model.dump_as_json())["trees"] for n in tree["nodes"]]
    numeric = [n for n in nodes if n.get("node_type") == "numerical_test_node"]
    categorical = [n for n in nodes if n.get("node_type") == "categorical_test_node"]
    assert numeric and categorical
    for node in numeric:
        column, threshold = rows[:, node["split_feature_id"]], node["threshold"]
        for value in (math.nextafter(threshold, -math.inf), threshold):
            assert (column == value).any()
        assert (column == math.nextafter(threshold, math.inf)).any()
    seen = {c for node in categorical for c in node["category_list"]}
    codes = set(rows[:, CATEGORICAL][~np.isnan(rows[:, CATEGORICAL])].astype(int))
    assert seen <= codes and {-1, max(seen) + 1} <= codes  # unseen categories too
    assert np.isnan(rows).all(axis=1).any()  # whole-NaN rows
    with pytest.raises(ValueError, match=r"holdout rows must be \(n, 6\)"):
        certificate_rows(model, lightgbm_binary[1][:, :4])


def test_sklearn_forest_and_histogram_boosting_from_skops(tmp_path: Path) -> None:
    x, y = make_data(1200, seed=3)
    forest = RandomForestClassifier(n_estimators=30, max_depth=5, random_state=3).fit(x, y)
    target = y * 2 - np.nan_to_num(x[:, 1])
    boosting = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=15, random_state=3)
    boosting.fit(x, target)
    for name, estimator in {"forest": forest, "boosting": boosting}.items():
        archive = tmp_path / f"{name}.skops"
        skops.io.dump(estimator, archive)

        outcome = compile_model(
            archive,
            "sklearn-skops",
            tmp_path / name,
            holdout=x[:300],
            tolerance=1e-12,
            parallel_comp=2 if name == "forest" else None,  # averaging after the units
        )

        assert outcome.certificate.passed, (name, outcome.certificate)
        library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
        native = load_native(archive, "sklearn-skops")
        if name == "forest":  # Treelite compiles both classes; P(class 1) is served
            assert (library.num_output, library.width) == (2, 1)
            assert np.array_equal(library.predict_batch(x[:50]), forest.predict_proba(x[:50])[:, 1])
            assert library.predict_one(x[0]) == forest.predict_proba(x[:1])[0, 1]
            # both outputs come back through each thread's own buffer, the second served
            for found in concurrent_scores(library, x[:200], threads=4):
                assert np.array_equal(found[:, 0], library.predict_batch(x[:200]))
        assert np.allclose(library.predict_batch(x[:50]), native.predict(x[:50]), atol=1e-12)
        # one below a split at 2.5: its low 32 bits are all ones, TL2cgen's `missing` flag
        edge = np.where(np.arange(FEATURES) == CATEGORICAL, math.nextafter(2.5, 0), x[:20])
        assert np.allclose(library.predict_batch(edge), native.predict(edge), atol=1e-12)


def xgboost_tree(tree_id: int, splits: list[tuple[int, float, int]], leaves: list[float]) -> dict:
    """A depth-2 XGBoost JSON tree: three (feature, threshold, default_left) splits, 4 leaves."""
    features = [feature for feature, _, _ in splits] + [0] * 4
    return {
        "base_weights": [0.0] * 3 + leaves,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [left for _, _, left in splits] + [0] * 4,
        "id": tree_id,
        "left_children": [1, 3, 5, -1, -1, -1, -1],
        "loss_changes": [1.0] * 3 + [0.0] * 4,
        "parents": [2147483647, 0, 0, 1, 1, 2, 2],
        "right_children": [2, 4, 6, -1, -1, -1, -1],
        "split_conditions": [threshold for _, threshold, _ in splits] + leaves,
        "split_indices": features,
        "split_type": [0] * 7,
        "sum_hessian": [8.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0],
        "tree_param": {"num_deleted": "0", "num_feature": "3", "num_nodes": "7"}
        | {"size_leaf_vector": "1"},
    }


def xgboost_model() -> dict[str, Any]:
    """A two-tree binary:logistic model over three features, as XGBoost 2 saves it."""
    trees = [
        xgboost_tree(0, [(0, 0.5, 1), (1, -1.25, 0), (2, 3.0, 1)], [-0.4, -0.1, 0.2, 0.5]),
        xgboost_tree(1, [(2, 0.1, 0), (0, 0.7, 1), (1, 0.0, 0)], [-0.3, 0.05, 0.15, 0.35]),
    ]
    booster = {"gbtree_model_param": {"num_parallel_tree": "1", "num_trees": "2"}}
    booster |= {"iteration_indptr": [0, 1, 2], "tree_info": [0, 0], "trees": trees}
    learner_param = {"base_score": "3E-1", "boost_from_average": "1", "num_class": "0"}
    learner_param |= {"num_feature": "3", "num_target": "1"}
    learner = {
        "attributes": {},
        "feature_names": ["age", "income", "tenure"],
        "feature_types": ["float", "float", "float"],
        "gradient_booster": {"model": booster, "name": "gbtree"},
        "learner_model_param": learner_param,
        "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
    }
    return {"learner": learner, "version": [2, 1, 0]}


def test_xgboost_json_certified_against_xgboost_itself(tmp_path: Path) -> None:
    model = tmp_path / "model"  # stored artifacts have no suffix
    model.write_text(json.dumps(xgboost_model()))

    outcome = compile_model(model, "xgboost-json", tmp_path / "build", tolerance=1e-6)

    # the reference is XGBoost's own predictions, named with its version
    assert outcome.certificate.reference == f"xgboost {xgboost.__version__}"
    assert outcome.certificate.passed and outcome.certificate.max_abs_diff <= 1e-6
    assert "-DML_VALUE_T=float" in outcome.flags  # XGBoost models compare in float32
    native = load_native(model, "xgboost-json")
    assert native.feature_names == ["age", "income", "tenure"]
    library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    # the left-most path of both trees: sigmoid(logit(0.3) - 0.4 - 0.3)
    expected = 1 / (1 + math.exp(-(math.log(0.3 / 0.7) - 0.7)))
    assert library.predict_one([0.0, -2.0, 0.0]) == pytest.approx(expected, rel=1e-6)
    # NaN takes the default directions: left then right (-0.1), right then right (0.35)
    missing = library.predict_one([math.nan] * 3)
    assert missing == pytest.approx(1 / (1 + math.exp(-(math.log(0.3 / 0.7) - 0.1 + 0.35))))


def test_without_xgboost_the_certificate_names_treelite_as_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.write_text(json.dumps(xgboost_model()))
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as where the extra is not installed
    outcome = compile_model(model, "xgboost-json", tmp_path / "build", tolerance=1e-6)
    assert outcome.certificate.reference.startswith("treelite.gtil ")
    assert outcome.certificate.reference.endswith("(XGBoost not installed)")
    assert outcome.certificate.passed


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_trained_xgboost_models_meet_the_float32_tolerance_against_xgboost(
    tmp_path: Path, objective: str
) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2000, 6))
    x[rng.random(x.shape) < 0.05] = np.nan
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2
    params: dict[str, Any] = {"objective": objective, "max_depth": 6, "nthread": 1}
    if objective == "reg:squarederror":  # scores in the hundreds: float32 sums round there
        y = 60 * signal + rng.normal(size=2000)
    elif objective == "multi:softprob":  # two classes: P(class 1), as every binary model
        y, params["num_class"] = (signal > 1).astype(int), 2
    else:
        y = (signal > 1).astype(int)
    booster = xgboost.train(params, xgboost.DMatrix(x, y), num_boost_round=150)
    model = tmp_path / "model"
    model.write_bytes(bytes(booster.save_raw("json")))
    tolerance = DEFAULT_POLICIES["high"].parity_tolerance("xgboost-json")

    outcome = compile_model(
        model, "xgboost-json", tmp_path / "build", holdout=x[:500], tolerance=tolerance
    )

    certificate = outcome.certificate
    assert certificate.passed, certificate
    # the float64 formats' limit would refuse the float32 arithmetic of every XGBoost model
    assert certificate.max_scaled_diff > DEFAULT_POLICIES["high"].max_parity_abs_diff
    library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    served = library.predict_batch(x[:500])
    own = booster.predict(xgboost.DMatrix(x[:500], missing=np.nan))
    own = own[:, 1] if own.ndim == 2 else own
    assert served.shape == own.shape
    assert float(np.max(np.abs(served - own))) <= certificate.max_abs_diff


def test_a_mutated_threshold_fails_the_certificate(
    lightgbm_binary: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    model, _ = lightgbm_binary
    source = generate(model, "lightgbm", tmp_path)
    main = source.directory / "main.c"
    code = main.read_text()
    # one threshold deep in the ensemble, moved by a millionth of itself
    thresholds = list(re.finditer(r"<= \(double\)(-?[0-9.e+-]+)\)", code))
    assert len(thresholds) > 50
    target = thresholds[len(thresholds) // 2]
    moved = float(target.group(1)) * (1 + 1e-6) + 1e-9
    main.write_text(code[: target.start(1)] + repr(moved) + code[target.end(1) :])
    built = build(source, tmp_path / "sabotaged.so")
    library = CompiledLibrary.open(built.path, built.sha256)

    certificate = certify(
        library, load_native(model, "lightgbm"), certificate_rows(source.model), tolerance=1e-9
    )

    assert not certificate.passed and certificate.max_abs_diff > 1e-9


def test_a_library_with_another_digest_is_refused(
    compiled_binary: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = compiled_binary
    with pytest.raises(LibraryRefused, match="not the approved"):
        CompiledLibrary.open(path, "0" * 64)
    tampered = tmp_path / "tampered.so"
    tampered.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(LibraryRefused, match="not the approved"):
        CompiledLibrary.open(tampered, digest)
    assert CompiledLibrary.open(path, digest.upper()).sha256 == digest


def test_a_rebuilt_library_at_the_same_path_is_loaded_anew(
    lightgbm_binary: tuple[Path, np.ndarray], compiled_binary: tuple[Path, str], tmp_path: Path
) -> None:
    holdout = lightgbm_binary[1]
    path = tmp_path / "model.so"
    path.write_bytes(compiled_binary[0].read_bytes())
    before = CompiledLibrary.open(path, compiled_binary[1])
    x, y = make_data(500, seed=9)
    other = lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(x, y), 5)
    other.save_model(tmp_path / "other.txt")
    second = build(generate(tmp_path / "other.txt", "lightgbm", tmp_path / "b"), path)

    after = CompiledLibrary.open(second.path, second.sha256)

    # dlopen would hand back the first library for a name it has already loaded
    assert np.array_equal(after.predict_batch(holdout), other.predict(holdout))
    assert not np.array_equal(after.predict_batch(holdout), before.predict_batch(holdout))


def test_without_memfd_a_private_copy_is_loaded(
    compiled_binary: tuple[Path, str],
    lightgbm_binary: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holdout = lightgbm_binary[1]
    expected = CompiledLibrary.open(*compiled_binary).predict_batch(holdout)
    monkeypatch.delattr(os, "memfd_create")

    copies = [CompiledLibrary.open(*compiled_binary) for _ in range(2)]

    for library in copies:
        assert np.array_equal(library.predict_batch(holdout), expected)


def test_rows_of_the_wrong_width_are_refused(compiled_binary: tuple[Path, str]) -> None:
    library = CompiledLibrary.open(*compiled_binary)
    with pytest.raises(ValueError, match="6 values"):
        library.predict_one([1.0] * 5)
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        library.predict_batch(np.zeros((3, 7)))
    assert library.predict_batch(np.zeros((0, 6))).shape == (0,)


def concurrent_scores(library: CompiledLibrary, rows: np.ndarray, threads: int) -> list[np.ndarray]:
    """Every row scored by `predict_one` from `threads` threads at once, one array each."""
    barrier = threading.Barrier(threads)
    results: dict[int, np.ndarray] = {}

    def score(offset: int) -> None:
        # each thread walks the rows from another start, so neighbours differ at every step
        order = np.roll(np.arange(len(rows)), offset * 97)
        found = np.empty((len(rows), library.width))
        barrier.wait()
        for _ in range(3):
            for index in order:
                found[index] = library.predict_one(rows[index])
        results[offset] = found

    workers = [threading.Thread(target=score, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return list(results.values())


def test_concurrent_single_row_calls_match_serial_ones(
    compiled_binary: tuple[Path, str], lightgbm_binary: tuple[Path, np.ndarray]
) -> None:
    library = CompiledLibrary.open(*compiled_binary)
    rows = lightgbm_binary[1]
    serial = np.array([[library.predict_one(row)] for row in rows])

    results = concurrent_scores(library, rows, threads=6)

    assert len(results) == 6
    for found in results:
        assert np.array_equal(found, serial)
    assert np.array_equal(serial[:, 0], library.predict_batch(rows))


@pytest.fixture(scope="module")
def numeric_binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 30-tree binary model on numerical features with NaNs and exact zeros; held-out rows."""
    x, y = make_data(2600, seed=4)
    x[:, CATEGORICAL] -= 3.0  # codes -3..4: many exact zeros, read as a number here
    x[:40, 2] = [1e-36, -1e-36, 1e-35, -1e-35, 0.0, -0.0, 2e-35, -2e-35] * 5  # LightGBM's zero rule
    params = {"objective": "binary", "num_leaves": 15, "seed": 4, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(x[600:], y[600:]), num_boost_round=30)
    path = tmp_path_factory.mktemp("lgb-numeric") / "model.txt"
    booster.save_model(path)
    return path, x[:600]


def test_an_eligible_lightgbm_model_goes_through_the_forest_tables(
    numeric_binary: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    model, rows = numeric_binary

    outcome = compile_model(model, "lightgbm", tmp_path, holdout=rows, tolerance=0.0)

    assert FOREST_DEFINE in outcome.flags and not (tmp_path / "src" / "header.h").exists()
    assert outcome.certificate.passed and outcome.certificate.max_abs_diff == 0.0
    assert outcome.certificate.nan_rows > len(rows)
    library = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    expected = lightgbm.Booster(model_file=str(model)).predict(rows)
    assert np.isnan(rows).any() and (rows == 0.0).any() and np.ptp(expected) > 0.5
    assert np.array_equal(library.predict_batch(rows), expected)  # several blocks, one partial
    assert np.array_equal(np.array([library.predict_one(row) for row in rows]), expected)
    assert library.predict_one(rows[0].tolist()) == expected[0]


def test_a_model_with_categorical_splits_keeps_tl2cgen(binary_outcome: CompileOutcome) -> None:
    assert FOREST_DEFINE not in binary_outcome.flags
    assert (Path(binary_outcome.library_path).parent / "src" / "header.h").exists()


def test_a_mutated_forest_table_fails_the_certificate(
    numeric_binary: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    model, _ = numeric_binary
    source = generate(model, "lightgbm", tmp_path)
    assert FOREST_DEFINE in source.defines
    tables = source.directory / "forest.h"
    text = tables.read_text()
    # one split threshold deep in the tables ({threshold, left, feature, nan_right, 0}), moved
    # by a millionth of itself
    thresholds = list(re.finditer(r"\{(-?[0-9][0-9.e+-]*), \d+, \d+, [01], 0\}", text))
    assert len(thresholds) > 50
    target = thresholds[len(thresholds) // 2]
    moved = float(target.group(1)) * (1 + 1e-6) + 1e-9
    tables.write_text(text[: target.start(1)] + repr(moved) + text[target.end(1) :])
    built = build(source, tmp_path / "sabotaged.so")
    library = CompiledLibrary.open(built.path, built.sha256)

    certificate = certify(
        library, load_native(model, "lightgbm"), certificate_rows(source.model), tolerance=1e-9
    )

    assert not certificate.passed and certificate.max_abs_diff > 1e-9
