"""Data quality of logged rows against a training profile, checked against hand counts."""

from __future__ import annotations

import numpy as np
import pytest

from workers.ml.profile import CategoricalProfile, NumericProfile, Profile, dumps
from workers.ml.quality import assess

PROFILE = Profile(
    rows=100,
    feature_names=["amount", "merchant", "hour"],
    features={
        "amount": NumericProfile(
            rows=100, missing=10, mean=5.0, std=2.0, min=0.0, max=10.0,
            edges=[5.0], counts=[45, 45], sample=[1.0, 9.0],
        ),
        "merchant": CategoricalProfile(
            rows=100, missing=0, other=0, categories=["food", "travel", "web"], counts=[50, 30, 20]
        ),
        "hour": NumericProfile(
            rows=100, missing=0, mean=12.0, std=6.0, min=0.0, max=23.0,
            edges=[12.0], counts=[50, 50], sample=[1.0, 20.0],
        ),
    },
)  # fmt: skip


def test_nulls_ranges_unseen_codes_widths_and_constants_are_counted() -> None:
    rows = [
        [1.0, 0.0, 7.0],
        [None, 1.0, 7.0],
        [11.0, 3.0, 7.0],  # amount above the training max, merchant code 3 unseen
        [-0.5, 1.5, 7.0],  # amount below the min, a fractional code is no category
        [None, 2.0, 7.0],
        [2.0, 2.0],  # another width: left out of the per-feature figures
    ]
    mismatch, found = assess(dumps(PROFILE), rows, PROFILE.feature_names)
    assert mismatch == pytest.approx(1 / 6)
    amount, merchant, hour = found
    assert (amount.null_rate, amount.training_null_rate) == (pytest.approx(2 / 5), 0.1)
    assert amount.out_of_range_rate == pytest.approx(2 / 3)  # of the 3 present values
    assert amount.unseen_rate is None and not amount.constant
    assert merchant.unseen_rate == pytest.approx(2 / 5) and merchant.out_of_range_rate is None
    assert hour.constant and hour.out_of_range_rate == 0.0 and hour.null_rate == 0.0


def test_a_feature_constant_in_training_is_not_reported_constant_live() -> None:
    flat = Profile(
        rows=10,
        feature_names=["flag"],
        features={
            "flag": NumericProfile(
                rows=10, missing=0, mean=1.0, std=0.0, min=1.0, max=1.0,
                edges=[], counts=[10], sample=[1.0],
            )
        },
    )  # fmt: skip
    _, [flag] = assess(flat, [[1.0]] * 5, ["flag"])
    assert not flag.constant and flag.out_of_range_rate == 0.0
    assert np.isfinite(flag.null_rate)
