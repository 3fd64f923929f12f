"""The demo data generator: byte-stable per seed, a learnable label, a shift that drifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from workers.ml import demo_data
from workers.ml.tabular import read_dataset

GENERATORS = [
    (demo_data.fraud_transactions, demo_data.FRAUD_TARGET, demo_data.FRAUD_SENSITIVE),
    (demo_data.credit_applications, demo_data.CREDIT_TARGET, demo_data.CREDIT_SENSITIVE),
]


@pytest.mark.parametrize(("generate", "target", "sensitive"), GENERATORS)
def test_the_same_seed_gives_the_same_bytes(generate, target, sensitive) -> None:
    first, again, other = generate(2_000, 11), generate(2_000, 11), generate(2_000, 12)
    assert demo_data.csv_bytes(first) == demo_data.csv_bytes(again)
    assert demo_data.parquet_bytes(first) == demo_data.parquet_bytes(again)
    assert demo_data.csv_bytes(first) != demo_data.csv_bytes(other)
    assert {target, sensitive} <= set(first.column_names)


def test_fraud_is_rare_depends_mildly_on_age_and_has_missing_values() -> None:
    table = demo_data.fraud_transactions(60_000, 3)
    fraud = np.asarray(table.column("is_fraud"))
    assert 0.02 <= fraud.mean() <= 0.05
    bands = np.asarray(table.column("age_band"))
    rates = {band: fraud[bands == band].mean() for band in demo_data.AGE_BANDS}
    assert rates["18-25"] > 1.2 * rates["26-40"]  # the sensitive attribute matters...
    assert max(rates.values()) < 3 * min(rates.values())  # ...mildly
    for name in ("country_risk", "card_age_days", "distance_from_home_km", "device_trust_score"):
        assert 0 < table.column(name).null_count < table.num_rows
    assert table.num_columns >= 12


def test_credit_defaults_are_common_but_a_minority() -> None:
    table = demo_data.credit_applications(30_000, 3)
    defaulted = np.asarray(table.column("defaulted"))
    assert 0.05 <= defaulted.mean() <= 0.2
    assert table.column("income").null_count > 0
    assert set(table.column("gender").to_pylist()) == set(demo_data.GENDERS)


def test_a_shift_moves_the_shifted_columns_and_keeps_the_others_row_for_row() -> None:
    reference = demo_data.fraud_transactions(5_000, 4)
    shifted = demo_data.fraud_transactions(5_000, 4, shift=1.0)
    assert reference.column("avg_amount_30d").equals(shifted.column("avg_amount_30d"))
    assert reference.column("age_band").equals(shifted.column("age_band"))
    assert np.nanmean(_floats(shifted, "country_risk")) > 1.5 * np.nanmean(
        _floats(reference, "country_risk")
    )
    assert shifted.column("distance_from_home_km").null_count > (
        2 * reference.column("distance_from_home_km").null_count
    )


def test_csv_and_parquet_read_back_as_the_same_values(tmp_path: Path) -> None:
    table = demo_data.credit_applications(500, 5)
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"credit{suffix}"
        demo_data.write(table, path)
        read = read_dataset(path)
        assert read.column_names == table.column_names
        for name in table.column_names:
            assert read.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_the_command_writes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fraud.parquet"
    demo_data.main(["fraud", str(path), "--rows", "300", "--seed", "2", "--shift", "0.5"])
    expected = demo_data.parquet_bytes(demo_data.fraud_transactions(300, 2, shift=0.5))
    assert path.read_bytes() == expected


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)
