"""Synthetic card transactions and credit applications for demos and tests: seeded, byte-stable.

`shift` (0 = the reference distribution, 1 = strongly drifted) only moves the distributions'
parameters, and every column draws from its own random stream, so with the same seed a shifted
window keeps the unshifted columns row for row. The label's dependence on the features does not
change with `shift`: that is input drift, not concept drift.

    uv run python -m workers.ml.demo_data fraud --rows 20000 --seed 7 transactions.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

Floats = npt.NDArray[np.float64]
FRAUD_TARGET, FRAUD_SENSITIVE = "is_fraud", "age_band"
CREDIT_TARGET, CREDIT_SENSITIVE = "defaulted", "gender"
AGE_BANDS = ("18-25", "26-40", "41-60", "61+")
_AGE_P = np.array([0.18, 0.36, 0.32, 0.14])
# the sensitive attribute's mild direct effect on the label (log-odds)
_AGE_EFFECT = np.array([0.35, 0.0, -0.1, 0.2])
MERCHANTS = (
    *("grocery", "fuel", "restaurant", "pharmacy", "online_retail"),
    *("electronics", "travel", "gaming", "jewelry", "money_transfer"),
)
_MERCHANT_P = np.array([0.24, 0.12, 0.16, 0.06, 0.18, 0.07, 0.06, 0.05, 0.02, 0.04])
_MERCHANT_P_SHIFTED = np.array([0.12, 0.06, 0.10, 0.04, 0.28, 0.12, 0.06, 0.12, 0.03, 0.07])
_MERCHANT_RISK = np.array([-0.9, -0.4, -0.6, -0.7, 0.5, 1.0, 0.4, 1.1, 1.5, 1.6])
_MERCHANT_ONLINE = np.array([0.05, 0.0, 0.1, 0.1, 1.0, 0.6, 0.5, 0.9, 0.3, 0.8])
_HOUR_WEIGHT = np.array(
    [2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 9, 10, 10, 9, 9, 9, 9, 9, 8, 7, 6, 4, 3.0]
)
EMPLOYMENT = ("salaried", "self_employed", "contract", "unemployed", "retired", "student")
_EMPLOYMENT_P = np.array([0.58, 0.13, 0.12, 0.05, 0.08, 0.04])
_EMPLOYMENT_P_SHIFTED = np.array([0.45, 0.14, 0.16, 0.13, 0.08, 0.04])
_EMPLOYMENT_RISK = np.array([0.0, 0.3, 0.35, 1.0, -0.1, 0.4])
HOMES = ("rent", "mortgage", "own")
GENDERS = ("female", "male")


def fraud_transactions(rows: int, seed: int, *, shift: float = 0.0) -> pa.Table:
    """Card transactions with `is_fraud` (~3%) and the sensitive attribute `age_band`."""
    streams = _streams(seed)
    age = next(streams).choice(len(AGE_BANDS), rows, p=_AGE_P)
    merchant = next(streams).choice(
        len(MERCHANTS), rows, p=_mix(_MERCHANT_P, _MERCHANT_P_SHIFTED, shift)
    )
    online = next(streams).random(rows) < _MERCHANT_ONLINE[merchant]
    hours = _HOUR_WEIGHT * np.where(np.arange(24) < 6, 1 + 3 * shift, 1.0)
    hour = next(streams).choice(24, rows, p=hours / hours.sum())
    avg_30d = np.exp(next(streams).normal(3.7, 0.6, rows))
    amount = np.round(avg_30d * np.exp(next(streams).normal(0.4 * shift, 0.8, rows)), 2)
    country_risk = next(streams).beta(1.2 + 2 * shift, 10.0, rows)
    card_age = np.floor(next(streams).gamma(2.0, 420 * (1 - 0.6 * shift), rows))
    velocity = next(streams).poisson(0.7 * (1 + 1.5 * shift) + 0.4 * (age == 0), rows)
    distance = np.round(np.exp(next(streams).normal(1.8 + 0.9 * shift, 1.3, rows)), 1)
    device_trust = np.where(online, next(streams).beta(5.0, 1.8, rows), np.nan)
    logit = (
        -8.6
        + 1.6 * _MERCHANT_RISK[merchant]
        + 0.9 * velocity
        + 1.5 * (hour < 6)
        + 7.0 * country_risk
        + 2.0 * (card_age < 45)
        + 0.6 * np.log1p(distance)
        + 1.3 * np.clip(np.log(amount / avg_30d), -1, 3)
        + 3.5 * np.nan_to_num(1 - device_trust)
        + _AGE_EFFECT[age]
    )
    fraud = next(streams).random(rows) < 1 / (1 + np.exp(-logit))
    missing = next(streams).random((3, rows))
    return pa.table(
        {
            "amount": amount,
            "hour": hour.astype(np.int64),
            "merchant_category": pa.array(np.array(MERCHANTS)[merchant]),
            "is_online": online.astype(np.int64),
            "country_risk": _missing(np.round(country_risk, 4), missing[0] < 0.03),
            "card_age_days": pa.array(card_age.astype(np.int64), mask=missing[1] < 0.01),
            "tx_velocity_1h": velocity.astype(np.int64),
            "distance_from_home_km": _missing(distance, missing[2] < 0.06 + 0.2 * shift),
            "avg_amount_30d": np.round(avg_30d, 2),
            "amount_vs_avg_30d": np.round(amount / avg_30d, 4),
            "device_trust_score": _missing(np.round(device_trust, 4), ~online),
            FRAUD_SENSITIVE: pa.array(np.array(AGE_BANDS)[age]),
            FRAUD_TARGET: fraud.astype(np.int64),
        }
    )


def credit_applications(rows: int, seed: int, *, shift: float = 0.0) -> pa.Table:
    """Credit applications with `defaulted` (~10%) and the sensitive attribute `gender`."""
    streams = _streams(seed)
    gender = next(streams).choice(len(GENDERS), rows, p=[0.48, 0.52])
    employment = next(streams).choice(
        len(EMPLOYMENT), rows, p=_mix(_EMPLOYMENT_P, _EMPLOYMENT_P_SHIFTED, shift)
    )
    home = next(streams).choice(len(HOMES), rows, p=[0.38, 0.40, 0.22])
    income = np.round(
        np.exp(next(streams).normal(10.8 - 0.3 * shift - 0.8 * (employment == 3), 0.5)), -2
    )
    debt_ratio = next(streams).beta(2.0 + 1.5 * shift, 5.0, rows)
    utilization = next(streams).beta(1.5 + 1.5 * shift, 3.0, rows)
    delinquencies = next(streams).poisson(0.25 * (1 + shift), rows)
    history = np.round(next(streams).gamma(3.0, 3.0, rows), 1)
    accounts = next(streams).poisson(4.0, rows)
    inquiries = next(streams).poisson(0.8 * (1 + 1.5 * shift), rows)
    loan = np.round(np.exp(next(streams).normal(9.4 + 0.3 * shift, 0.6, rows)), -2)
    logit = (
        -4.6
        + 3.0 * debt_ratio
        + 2.4 * utilization
        + 0.6 * delinquencies
        + 0.25 * inquiries
        - 0.07 * history
        - 0.9 * (np.log(income) - 10.8)
        + 0.8 * np.log1p(loan / income)
        + _EMPLOYMENT_RISK[employment]
        + 0.2 * (home == 0)
        + 0.15 * (gender == 1)
    )
    default = next(streams).random(rows) < 1 / (1 + np.exp(-logit))
    missing = next(streams).random((2, rows))
    return pa.table(
        {
            "income": _missing(income, missing[0] < 0.04),
            "debt_ratio": np.round(debt_ratio, 4),
            "utilization": np.round(utilization, 4),
            "delinquencies_2y": delinquencies.astype(np.int64),
            "credit_history_years": history,
            "open_accounts": accounts.astype(np.int64),
            "recent_inquiries": pa.array(inquiries.astype(np.int64), mask=missing[1] < 0.05),
            "loan_amount": loan,
            "employment_type": pa.array(np.array(EMPLOYMENT)[employment]),
            "home_ownership": pa.array(np.array(HOMES)[home]),
            CREDIT_SENSITIVE: pa.array(np.array(GENDERS)[gender]),
            CREDIT_TARGET: default.astype(np.int64),
        }
    )


def _streams(seed: int) -> Iterator[np.random.Generator]:
    """Independent generators, one per draw, in a fixed order."""
    return (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(32))


def _mix(reference: Floats, shifted: Floats, shift: float) -> Floats:
    mixed = (1 - shift) * reference + shift * shifted
    return np.asarray(mixed / mixed.sum(), dtype=np.float64)


def _missing(values: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.bool_]) -> pa.Array:
    return pa.array(np.where(mask, np.nan, values), from_pandas=True)


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV (header row, missing values empty)."""
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as a Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def write(table: pa.Table, path: Path) -> None:
    """Write the table as Parquet (`.parquet`) or CSV (anything else)."""
    path.write_bytes(parquet_bytes(table) if path.suffix == ".parquet" else csv_bytes(table))


GENERATORS: dict[str, Callable[..., pa.Table]] = {
    "fraud": fraud_transactions,
    "credit": credit_applications,
}


def main(argv: list[str] | None = None) -> None:
    """Write a demo dataset: `python -m workers.ml.demo_data fraud --rows N --seed S out.csv`."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("kind", choices=sorted(GENERATORS))
    parser.add_argument("path", type=Path, help="output file: .parquet or .csv")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=0.0, help="drift: 0 (none) to 1 (strong)")
    args = parser.parse_args(argv)
    write(GENERATORS[args.kind](args.rows, args.seed, shift=args.shift), args.path)


if __name__ == "__main__":
    main()
