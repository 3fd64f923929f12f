"""The parity certificate: a compiled library against the model's own predictions.

Certificate rows are the holdout rows (when there are any), copies of them with NaNs injected,
whole-NaN rows, and probes built from the model's own splits: for every split node (a sample of
them in very large models) a row that reaches the node, with the split feature just below, at
and just above the threshold (in float64 and in float32, the two value types Treelite compiles),
at every category of a categorical split, at unseen categories, and at NaN. A threshold or a
category that compiled wrongly is therefore met by a row, whatever the holdout looks like.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from app.scoring.library import CompiledLibrary
from workers.ml.native import NativeModel

Matrix = npt.NDArray[np.float64]

MAX_PROBED_NODES = 4_000
MAX_NAN_COPIES = 2_000
RANDOM_ROWS = 256
NAN_SHARE = 0.05  # of the cells in generated rows, outside the paths to probed nodes
# a NaN from one side only is a failure; JSON has no infinity, so it is recorded as this
UNBOUNDED_DIFF = sys.float_info.max
_EMPTY_VALUE = re.compile(r'("[a-z_]+":)(?=[,}\]])')


class ParityCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """How a compiled library compared with the native model, row by row."""

    rows_checked: int
    nan_rows: int
    categorical_features: list[int]
    max_abs_diff: float
    # max_abs_diff / max(1, the largest |reference score|): the absolute difference for scores
    # within [-1, 1] (probabilities), relative to the model's scale beyond (a regression)
    max_scaled_diff: float
    tolerance: float
    passed: bool
    # what computed the reference scores, and its version ("xgboost 3.2.0")
    reference: str = ""


@dataclass(frozen=True)
class CertificateRows:
    """The rows to check and which features the model splits on as categories."""

    rows: Matrix
    categorical_features: list[int]


@dataclass
class _Path:
    """What the values on the way to a node must satisfy: (low, high) or category sets."""

    bounds: dict[int, tuple[float, float]]
    allowed: dict[int, frozenset[int]]
    forbidden: dict[int, frozenset[int]]


def certificate_rows(
    model: Any, holdout: npt.ArrayLike | None = None, *, missing: bool = True, seed: int = 0
) -> CertificateRows:
    """Rows for a certificate of the Treelite `model`: holdout, NaN copies and split probes.

    With `missing` False (a model whose library refuses NaN) no row has a NaN.
    """
    # Treelite writes a non-finite threshold (scikit-learn's "missing or not" splits are at
    # +inf) as nothing at all: `"threshold":,`; read those as NaN, a threshold not to probe
    text = _EMPTY_VALUE.sub(r"\1NaN", model.dump_as_json(pretty_print=False))
    dump = json.loads(text)
    features = int(dump["num_feature"])
    rng = np.random.default_rng(seed)
    pools, categorical = _pools(dump["trees"], features)
    nan_share = NAN_SHARE if missing else 0.0
    parts = [
        _random_rows(pools, RANDOM_ROWS, nan_share, rng),
        _probes(dump["trees"], pools, nan_share, rng),
    ]
    given = parts[0] if holdout is None else np.asarray(holdout, dtype=np.float64)
    if given.ndim != 2 or given.shape[1] != features:
        raise ValueError(f"holdout rows must be (n, {features}), not {given.shape}")
    if holdout is not None:
        parts.append(given)
    if missing:
        parts += [np.full((2, features), np.nan), _with_nans(given[:MAX_NAN_COPIES], rng)]
    rows = np.concatenate(parts)
    if not missing:
        rows = rows[~np.isnan(rows).any(axis=1)]
    return CertificateRows(rows=rows, categorical_features=sorted(categorical))


def certify(
    library: CompiledLibrary,
    native: NativeModel,
    rows: CertificateRows,
    *,
    tolerance: float,
) -> ParityCertificate:
    """Compare the library's batch and single-row scores with the native ones on `rows`."""
    checked = rows.rows
    if not native.accepts_missing:
        checked = checked[~np.isnan(checked).any(axis=1)]
    expected = native.predict(checked)
    batch = library.predict_batch(checked)
    single = np.array([library.predict_one(row) for row in checked]).reshape(batch.shape)
    if expected.shape != batch.shape:
        raise ValueError(f"native scores are {expected.shape}, compiled {batch.shape}")
    worst = max(_max_abs_diff(expected, batch), _max_abs_diff(expected, single))
    # the model's scale: its largest reference score (a float32 sum's rounding grows with the
    # partial sums, not with the row's own result, which cancellation may make small)
    finite = np.abs(expected[np.isfinite(expected)])
    scaled = worst / max(1.0, float(finite.max()) if finite.size else 1.0)
    categorical = sorted(set(rows.categorical_features) | set(native.categorical_features))
    return ParityCertificate(
        rows_checked=len(checked),
        nan_rows=int(np.isnan(checked).any(axis=1).sum()),
        categorical_features=categorical,
        max_abs_diff=worst,
        max_scaled_diff=scaled,
        tolerance=tolerance,
        passed=scaled <= tolerance,
        reference=native.reference,
    )


def _max_abs_diff(expected: Matrix, actual: Matrix) -> float:
    both_nan = np.isnan(expected) & np.isnan(actual)
    diff = np.where(both_nan, 0.0, np.abs(expected - actual))
    if diff.size == 0:
        return 0.0
    worst = float(np.max(diff))  # NaN if only one side is NaN
    return worst if math.isfinite(worst) else UNBOUNDED_DIFF


def _splits(trees: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [node for tree in trees for node in tree["nodes"] if "split_feature_id" in node]


def _near(threshold: float) -> set[float]:
    """Values just below, at and just above a threshold, as float64 and as float32."""
    narrow = np.float32(threshold)
    values = {threshold, math.nextafter(threshold, -math.inf), math.nextafter(threshold, math.inf)}
    if math.isfinite(narrow):
        values |= {float(np.nextafter(narrow, np.float32(d))) for d in (-np.inf, np.inf)}
        values.add(float(narrow))
    return {value for value in values if math.isfinite(value)}


def _unseen(categories: set[int]) -> set[float]:
    """Categories no split names: past the largest, a gap if any, and a negative one."""
    top = max(categories, default=-1)
    gaps = set(range(top)) - categories
    return {float(top + 1), float(top + 1000), -1.0, *(float(g) for g in sorted(gaps)[:1])}


def _pools(trees: list[dict[str, Any]], features: int) -> tuple[list[list[float]], set[int]]:
    """Interesting values per feature: threshold neighbours, categories and unseen ones."""
    values: list[set[float]] = [set() for _ in range(features)]
    categories: dict[int, set[int]] = {}
    for node in _splits(trees):
        feature = int(node["split_feature_id"])
        if node["node_type"] == "categorical_test_node":
            categories.setdefault(feature, set()).update(int(c) for c in node["category_list"])
        else:
            values[feature] |= _near(float(node["threshold"]))
    for feature, seen in categories.items():
        values[feature] |= {float(c) for c in seen} | _unseen(seen)
    pools = [sorted(found) or [0.0] for found in values]
    return pools, set(categories)


def _random_rows(
    pools: list[list[float]], count: int, nan_share: float, rng: np.random.Generator
) -> Matrix:
    """Rows of values drawn from each feature's pool, a `nan_share` of them NaN."""
    columns = [rng.choice(np.asarray(pool), size=count) for pool in pools]
    rows = np.column_stack(columns) if columns else np.empty((count, 0))
    rows[rng.random(rows.shape) < nan_share] = np.nan
    return rows


def _with_nans(rows: Matrix, rng: np.random.Generator) -> Matrix:
    """Copies with about a fifth of the cells (at least one per row) set to NaN."""
    copies = rows.copy()
    if copies.size == 0:
        return copies
    mask = rng.random(copies.shape) < 0.2
    mask[np.arange(len(copies)), rng.integers(0, copies.shape[1], size=len(copies))] = True
    copies[mask] = np.nan
    return copies


def _probes(
    trees: list[dict[str, Any]],
    pools: list[list[float]],
    nan_share: float,
    rng: np.random.Generator,
) -> Matrix:
    """Rows that reach each split node, its feature set to each value around its test."""
    reached: list[tuple[dict[str, Any], _Path]] = []
    for tree in trees:
        nodes = {int(node["node_id"]): node for node in tree["nodes"]}
        stack = [(nodes[0] if 0 in nodes else tree["nodes"][0], _Path({}, {}, {}))]
        while stack:
            node, path = stack.pop()
            if "split_feature_id" not in node:
                continue
            reached.append((node, path))
            stack.extend(
                (nodes[int(node[side])], _narrow(path, node, side == "left_child"))
                for side in ("left_child", "right_child")
            )
    if len(reached) > MAX_PROBED_NODES:
        picked = rng.choice(len(reached), size=MAX_PROBED_NODES, replace=False)
        reached = [reached[i] for i in sorted(picked)]
    bases = _random_rows(pools, len(reached), nan_share, rng)
    rows = [
        row
        for (node, path), base in zip(reached, bases, strict=True)
        for row in _node_rows(node, path, base)
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, len(pools))


def _goes_left(op: str, value: float, threshold: float) -> bool:
    tests = {
        "<=": value <= threshold,
        "<": value < threshold,
        ">=": value >= threshold,
        ">": value > threshold,
    }
    return tests[op]


def _narrow(path: _Path, node: dict[str, Any], left: bool) -> _Path:
    """The path to a child: the parent's constraints plus its test's outcome."""
    feature = int(node["split_feature_id"])
    bounds, allowed, forbidden = dict(path.bounds), dict(path.allowed), dict(path.forbidden)
    if node["node_type"] == "categorical_test_node":
        listed = frozenset(int(c) for c in node["category_list"])
        inside = left != bool(node.get("category_list_right_child", False))
        if inside:
            allowed[feature] = allowed.get(feature, listed) & listed
        else:
            forbidden[feature] = forbidden.get(feature, frozenset()) | listed
    elif math.isfinite(threshold := float(node["threshold"])):
        low, high = bounds.get(feature, (-math.inf, math.inf))
        # whether the left side is the low side follows from the operator
        low_side = _goes_left(node["comparison_op"], threshold - abs(threshold) - 1.0, threshold)
        if left == low_side:
            high = min(high, threshold)
        else:
            low = max(low, threshold)
        bounds[feature] = (low, high)
    return _Path(bounds, allowed, forbidden)


def _inside(low: float, high: float) -> float:
    """A value strictly between two bounds where there is room; near them otherwise."""
    if math.isinf(low) and math.isinf(high):
        return 0.0
    if math.isinf(low):
        return high - max(1.0, abs(high))
    if math.isinf(high):
        return low + max(1.0, abs(low))
    return low + (high - low) / 2


def _node_rows(node: dict[str, Any], path: _Path, row: Matrix) -> list[list[float]]:
    """`row` set to reach `node`, then once per value to try at its test (NaN first)."""
    base = [float(value) for value in row]
    for feature, (low, high) in path.bounds.items():
        base[feature] = _inside(low, high)
    for feature, options in path.allowed.items():
        usable = sorted(options - path.forbidden.get(feature, frozenset()))
        base[feature] = float(usable[0]) if usable else base[feature]
    for feature, banned in path.forbidden.items():
        if feature not in path.allowed:
            base[feature] = float(next(c for c in range(len(banned) + 1) if c not in banned))
    feature = int(node["split_feature_id"])
    if node["node_type"] == "categorical_test_node":
        listed = {int(c) for c in node["category_list"]}
        trials = {float(c) for c in listed} | _unseen(listed)
    else:
        trials = _near(float(node["threshold"]))
    probes = []
    for value in [math.nan, *sorted(trials)]:  # dropped later if the model refuses NaN
        probe = list(base)
        probe[feature] = value
        probes.append(probe)
    return probes
