"""ML job cores bench: each figure is the ratio to the bare library calls on the same data.

C1  compliance on 100,000 rows, two sensitive features: `check_compliance` vs the bare fairlearn
    calls a user would make for the same figures (a MetricFrame of selection rate, TPR, FPR and
    count, one of per-group AUC, and demographic_parity_difference/_ratio and
    equalized_odds_difference)
D1  drift of 100,000 rows x 30 features (24 numeric, 6 categorical) against a training profile:
    `check_drift` vs the bare scipy calls (ks_2samp, wasserstein_distance, chi2_contingency) and
    a numpy PSI on the same data, handed category codes and NaN-marked floats ready to use;
    once with a window of raw values (text categories) and once of model inputs (codes)
B1  `thompson_choice` over 2 arms vs two bare `random.betavariate` calls

    uv run python -m bench.ml [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import common
from domain.bandit import thompson_choice
from workers.ml import demo_data
from workers.ml import profile as profiles
from workers.ml.compliance import check_compliance
from workers.ml.drift import check_drift

GOALS = {"c1": ("ours/bare fairlearn", 1.5), "d1_raw": ("ours/bare scipy (raw)", 1.5)}
GOALS["d1_inputs"] = ("ours/bare scipy (inputs)", 1.5)
GOALS["b1"] = ("choice/2 betavariates", 1.5)
CATEGORIES = [f"c{i:02d}" for i in range(12)]


@dataclass(frozen=True)
class Sizes:
    rows: int
    numeric: int
    categorical: int
    rounds: int  # ours and bare alternate; the median round is reported
    choices: int


FULL = Sizes(100_000, 24, 6, 5, 200_000)
QUICK = Sizes(20_000, 24, 6, 3, 20_000)


def timed(op: Callable[[], object]) -> float:
    gc.collect()  # a collection owed by earlier work must not land in this measurement
    start = time.perf_counter()
    op()
    return time.perf_counter() - start


def alternate(
    ours: Callable[[], object], bare: Callable[[], object], rounds: int
) -> dict[str, Any]:
    """Median seconds of each side over rounds that alternate which goes first."""
    ours(), bare()  # warm-up: imports, caches
    seconds: dict[str, list[float]] = {"ours": [], "bare": []}
    for index in range(rounds):
        pair = (
            (("ours", ours), ("bare", bare)) if index % 2 == 0 else (("bare", bare), ("ours", ours))
        )
        for name, op in pair:
            seconds[name].append(timed(op))
    ours_s, bare_s = common.median(seconds["ours"]), common.median(seconds["bare"])
    return {"ours_ms": round(ours_s * 1e3, 1), "bare_ms": round(bare_s * 1e3, 1)} | {
        "ratio": round(ours_s / bare_s, 2)
    }


def c1_compliance(sizes: Sizes) -> dict[str, Any]:
    from fairlearn.metrics import (  # noqa: PLC0415 - after the imports of the module
        MetricFrame,
        count,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    table = demo_data.fraud_transactions(sizes.rows, 1)
    truth = np.asarray(table.column("is_fraud"))
    rng = np.random.default_rng(2)
    score = np.clip(0.1 + 0.5 * truth + rng.normal(0, 0.2, truth.size), 0, 1)
    sensitive = {
        "age_band": np.asarray(table.column("age_band")).astype(str),
        "gender": rng.choice(np.array(["female", "male"]), truth.size),
    }

    def ours() -> object:
        return check_compliance(truth, score, sensitive, threshold=0.5)

    def bare() -> object:
        predicted = (score >= 0.5).astype(int)
        rates = {"selection_rate": selection_rate, "count": count}
        rates |= {"tpr": true_positive_rate, "fpr": false_positive_rate}
        figures = []
        for groups in sensitive.values():
            by = {"sensitive_features": groups}
            frame = MetricFrame(metrics=rates, y_true=truth, y_pred=predicted, **by)
            auc = MetricFrame(metrics=roc_auc_score, y_true=truth, y_pred=score, **by)
            figures += [frame.by_group, auc.by_group]
            figures.append(demographic_parity_difference(truth, predicted, **by))
            figures.append(demographic_parity_ratio(truth, predicted, **by))
            figures.append(equalized_odds_difference(truth, predicted, **by))
        return figures

    return {"rows": sizes.rows, "features": len(sensitive)} | alternate(ours, bare, sizes.rounds)


def drift_tables(sizes: Sizes) -> tuple[pa.Table, pa.Table, dict[str, list[str]]]:
    """A reference and a shifted window of numeric (some with missing values) and text columns."""

    def table(seed: int, shift: float) -> pa.Table:
        rng = np.random.default_rng(seed)
        columns: dict[str, Any] = {}
        for i in range(sizes.numeric):
            values = rng.normal(shift * (i % 3) * 0.2, 1 + 0.1 * (i % 4), sizes.rows)
            values[rng.random(sizes.rows) < 0.02 * (i % 3)] = np.nan
            columns[f"x{i:02d}"] = pa.array(values, from_pandas=True)
        for i in range(sizes.categorical):
            weights = np.linspace(1, 1 + shift * i, len(CATEGORIES))
            picked = rng.choice(len(CATEGORIES), sizes.rows, p=weights / weights.sum())
            columns[f"k{i}"] = pa.array(np.array(CATEGORIES)[picked])
        return pa.table(columns)

    maps = {f"k{i}": CATEGORIES for i in range(sizes.categorical)}
    return table(1, 0.0), table(2, 0.5), maps


def d1_drift(sizes: Sizes) -> dict[str, Any]:
    from scipy import stats  # noqa: PLC0415 - after the imports of the module

    reference, window, maps = drift_tables(sizes)
    names = list(reference.column_names)
    profile = profiles.build(reference, names, maps, seed=0)
    encoded = {
        name: np.asarray(
            profiles.tabular.codes(window.column(name), maps[name])
            if name in maps
            else profiles.tabular.numeric(window.column(name), name),
            dtype=np.float64,
        )
        for name in names
    }

    def bare() -> object:
        figures = []
        for name in names:
            feature = profile.features[name]
            values = encoded[name]
            if isinstance(feature, profiles.NumericProfile):
                valid = values[~np.isnan(values)]
                edges = np.asarray(feature.edges)
                bins = np.bincount(np.searchsorted(edges, valid), minlength=edges.size + 1)
                actual = np.array([values.size - valid.size, *bins])
                expected = np.array([feature.missing, *feature.counts])
                sample = np.asarray(feature.sample)
                figures.append(stats.ks_2samp(sample, valid, method="asymp"))
                figures.append(stats.wasserstein_distance(sample, valid))
            else:
                actual = np.bincount(values.astype(np.int64), minlength=len(feature.categories))
                expected = np.asarray(feature.counts)
                figures.append(stats.chi2_contingency(np.vstack([expected, actual])))
            p = np.clip(expected / expected.sum(), 1e-4, None)
            q = np.clip(actual / actual.sum(), 1e-4, None)
            figures.append(np.sum((q - p) * np.log(q / p)))
        return figures

    raw = alternate(lambda: check_drift(profile, window), bare, sizes.rounds)
    inputs = alternate(lambda: check_drift(profile, encoded), bare, sizes.rounds)
    severity = check_drift(profile, window).severity
    shape = {"rows": sizes.rows, "features": len(names), "severity": severity}
    return shape | {"raw": raw, "inputs": inputs}


def b1_thompson(sizes: Sizes) -> dict[str, Any]:
    arms = [(1, 120.0, 880.0), (2, 140.0, 860.0)]
    rng = random.Random(3)
    beta = rng.betavariate

    def ours() -> None:
        for _ in range(sizes.choices):
            thompson_choice(arms, rng)

    def bare() -> None:
        for _ in range(sizes.choices):
            beta(121.0, 881.0)
            beta(141.0, 861.0)

    figures = alternate(ours, bare, sizes.rounds)
    per_call = {
        k.replace("_ms", "_us"): round(v * 1e3 / sizes.choices, 2) for k, v in figures.items()
    }
    return {"choices": sizes.choices} | per_call | {"ratio": figures["ratio"]}


def notes() -> dict[str, Any]:
    from importlib.metadata import version  # noqa: PLC0415

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    libraries = {name: version(name) for name in ("fairlearn", "scipy", "numpy", "pyarrow")}
    return {
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **libraries,
    }


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    values = {"c1": figures["c1"]["ratio"], "b1": figures["b1"]["ratio"]}
    values |= {
        "d1_raw": figures["d1"]["raw"]["ratio"],
        "d1_inputs": figures["d1"]["inputs"]["ratio"],
    }
    return {k: (v, "PASS" if v <= GOALS[k][1] else "MISS") for k, v in values.items()}


def report(figures: dict[str, Any]) -> str:
    c1, d1, b1 = figures["c1"], figures["d1"], figures["b1"]
    lines = [
        f"C1  compliance, {c1['rows']} rows, {c1['features']} sensitive features "
        f"(median of {figures['sizes']['rounds']} alternating rounds)",
        f"    check_compliance {c1['ours_ms']:>9} ms",
        f"    bare fairlearn   {c1['bare_ms']:>9} ms",
        f"    ours/bare = {c1['ratio']}x",
        "",
        f"D1  drift, {d1['rows']} rows x {d1['features']} features (window severity "
        f"{d1['severity']})",
        f"    check_drift, raw window     {d1['raw']['ours_ms']:>9} ms",
        f"    check_drift, model inputs   {d1['inputs']['ours_ms']:>9} ms",
        f"    bare scipy + numpy PSI      {d1['raw']['bare_ms']:>9} ms",
        f"    ours/bare = {d1['raw']['ratio']}x (raw), {d1['inputs']['ratio']}x (inputs)",
        "",
        f"B1  Thompson choice, 2 arms, {b1['choices']} calls",
        f"    thompson_choice   {b1['ours_us']:>7} µs/call",
        f"    2 betavariates    {b1['bare_us']:>7} µs/call",
        f"    choice/bare = {b1['ratio']}x",
        "",
        "SUMMARY",
    ]
    for key, (value, verdict) in figures["verdicts"].items():
        label, goal = GOALS[key]
        lines.append(f"    {key.upper():<10}{label:<26}{value:>7}x  goal <= {goal}x  {verdict}")
    machine = ", ".join(f"{k}={v}" for k, v in figures["notes"].items())
    return "\n".join([*lines, f"    machine: {machine}"])


def main(sizes: Sizes) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": asdict(sizes), "notes": notes()}
    figures["c1"] = c1_compliance(sizes)
    figures["d1"] = d1_drift(sizes)
    figures["b1"] = b1_thompson(sizes)
    return figures | {"verdicts": verdicts(figures)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = main(QUICK if args.quick else FULL)
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
