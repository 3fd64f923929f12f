"""Data quality of a window of logged inputs against a version's training profile: rows of
another width, and per feature its null rate, values outside the training range (numeric),
category codes training never had (categorical), and whether it stayed constant.

Inputs are logged as the model's input row, categories as their codes; a text category the
scorer did not know was scored (and logged) as missing, so it counts in the null rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from domain.quality import FeatureQuality
from workers.ml.profile import CategoricalProfile, NumericProfile, Profile, loads


def assess(
    profile: Profile | bytes, rows: list[Any], feature_names: list[str]
) -> tuple[float, list[FeatureQuality]]:
    """(share of rows of another width, each feature's quality) of logged input rows."""
    reference = loads(profile)
    width = len(feature_names)
    kept = [row for row in rows if isinstance(row, list) and len(row) == width]
    mismatch = 1.0 - len(kept) / len(rows) if rows else 0.0
    matrix = np.array(
        [[v if isinstance(v, int | float) else np.nan for v in row] for row in kept],
        dtype=np.float64,
    ).reshape(len(kept), width)
    found = [
        feature_quality(name, matrix[:, index], reference.features.get(name))
        for index, name in enumerate(feature_names)
    ]
    return mismatch, found


def feature_quality(
    name: str,
    values: npt.NDArray[np.float64],
    reference: NumericProfile | CategoricalProfile | None,
) -> FeatureQuality:
    """One feature's window against its profile (no profile: its null rate alone)."""
    missing = np.isnan(values)
    valid = values[~missing]
    null_rate = float(missing.mean()) if values.size else 0.0
    if reference is None:
        return FeatureQuality(feature=name, null_rate=null_rate, training_null_rate=0.0)
    trained_nulls = reference.missing / reference.rows if reference.rows else 0.0
    constant = valid.size >= 2 and bool(np.all(valid == valid[0]))
    if isinstance(reference, NumericProfile):
        outside = 0.0
        if valid.size and reference.min is not None and reference.max is not None:
            outside = float(np.mean((valid < reference.min) | (valid > reference.max)))
        varied = reference.min is not None and reference.min != reference.max
        return FeatureQuality(
            feature=name,
            null_rate=null_rate,
            training_null_rate=trained_nulls,
            out_of_range_rate=outside,
            constant=constant and varied,
        )
    known = len(reference.categories)
    unseen = (valid != np.floor(valid)) | (valid < 0) | (valid >= known)
    varied = sum(1 for count in reference.counts if count) > 1
    return FeatureQuality(
        feature=name,
        null_rate=null_rate,
        training_null_rate=trained_nulls,
        unseen_rate=float(unseen.mean()) if valid.size else 0.0,
        constant=constant and varied,
    )
