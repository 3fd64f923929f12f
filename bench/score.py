"""Scoring bench (issue 5): our compiled library against its peers, on the same models, same run.

Two LightGBM binary classifiers (31 leaves, 30 features, NaNs in 8 of them, fixed seed) of
100 and 500 trees (50 and 200 with --quick) are compiled with `compile_model`; every engine
then scores the same 10,000 held-out rows, distinct on every call (one row repeated would
train the branch predictor and flatter compiled code):

  ours      `CompiledLibrary.predict_one(row)` (a float64 row view; "ours, list" takes a list,
            as a JSON body gives it) and `predict_batch(matrix)`
  lightgbm  `Booster.predict(rows, num_threads=1)`
  tl2cgen   `tl2cgen.Predictor(nthread=1).predict(DMatrix(rows))` on TL2cgen's own build of
            the model (its runtime cannot call our library, see bench/score_peers.py)
  gtil      `treelite.gtil.predict(model, rows, nthread=1)`
  lleaves   `Model.predict(rows, n_jobs=1)` when lleaves is installed (not a dependency)
  C floor   bench/score_floor.c: a C loop that dlopens our library and times `ml_predict_row`
            and the generated `predict` per call over the same rows

These models qualify for compile.py's forest tables (workers/ml/forest.c), so "ours" is that
branch-free evaluator; the C floor's `predict` path, which needs TL2cgen's code, is skipped then.

Single-row latencies are taken per call in interleaved, rotating blocks so drift hits all
engines alike; batches alternate which engine goes first and report the median round.

S1  ours vs lightgbm single-row p50, large model: >= 4x        S2  same, small model: >= 10x
S3  ours / C-floor `ml_predict_row` p50, large: <= 1.5x        S4  ours faster than every peer
    (S4: the slowest margin over any peer on either model)
S5  batch of 10,000 rows, one thread, ours vs lightgbm rows/s, both models: >= 2.5x (lleaves for
    reference; "c_floor_batch" is `ml_predict_batch` called from C)
S6  max |ours - lightgbm| on the 10,000 rows with NaNs: 0.0
H1  HTTP: POST /v1/score p50 / GET /health p50 at concurrency 1 (bench/score_http.py)

    uv run python -m bench.score [--quick] [--no-http] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, score_http
from bench import score_peers as sp

SINGLE = ("ours", "ours_list", "lightgbm", "tl2cgen", "gtil", "lleaves")
PEERS = ("lightgbm", "tl2cgen", "gtil", "lleaves")  # S4: what ours must beat
GOALS = {
    "s1": ("lightgbm/ours p50, large", ">=", 4.0),
    "s2": ("lightgbm/ours p50, small", ">=", 10.0),
    "s3": ("ours/C floor p50, large", "<=", 1.5),
    "s4": ("best peer/ours p50", ">=", 1.0),
    "s5": ("ours/lightgbm batch rows/s", ">=", 2.5),
    "s6": ("max |ours - lightgbm|", "<=", 0.0),
    "h1": ("score/health p50, c=1", "<=", 1.5),
}


@dataclass(frozen=True)
class Sizes:
    trees: tuple[int, int]  # small, large
    train_rows: int
    rows: int  # distinct evaluation rows (also the batch)
    single_calls: int  # per engine and model
    block: int
    batch_rounds: int
    floor_rounds: int  # passes of the C floor over the rows
    http_requests: int  # per measurement at concurrency 1
    http_seconds: float  # per concurrency-16 measurement


FULL = Sizes((100, 500), 20_000, 10_000, 10_000, 500, 7, 3, 5_000, 5.0)
QUICK = Sizes((50, 200), 5_000, 10_000, 2_000, 250, 3, 1, 1_000, 2.0)


def single_ops(peers: sp.Peers, rows: np.ndarray) -> dict[str, Callable[[int], object]]:
    """One call per engine that scores row `i` alone."""
    import tl2cgen  # noqa: PLC0415
    import treelite.gtil  # noqa: PLC0415

    views = [rows[i] for i in range(len(rows))]
    lists = [row.tolist() for row in views]
    mats = [rows[i : i + 1] for i in range(len(rows))]
    ours, booster, predictor, model = peers.ours, peers.booster, peers.tl2cgen, peers.treelite
    ops: dict[str, Callable[[int], object]] = {
        "ours": lambda i: ours.predict_one(views[i]),
        "ours_list": lambda i: ours.predict_one(lists[i]),
        "lightgbm": lambda i: booster.predict(mats[i], num_threads=1),
        "tl2cgen": lambda i: predictor.predict(tl2cgen.DMatrix(mats[i])),
        "gtil": lambda i: treelite.gtil.predict(model, mats[i], nthread=1),
    }
    if peers.lleaves is not None:
        lleaves = peers.lleaves
        ops["lleaves"] = lambda i: lleaves.predict(mats[i], n_jobs=1)
    return ops


def latencies(
    ops: dict[str, Callable[[int], object]], rows: int, calls: int, block: int
) -> dict[str, list[float]]:
    """Microseconds per call of each op over distinct rows, in rotating interleaved blocks."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    names, cursor = list(ops), dict.fromkeys(ops, 0)
    for name in names:  # warm-up on rows the measurement reaches last
        for i in range(rows - 200, rows):
            ops[name](i)
    gc.collect()
    clock = time.perf_counter_ns
    for index in range(calls // block):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            op, into, start = ops[name], samples[name], cursor[name]
            for i in range(start, start + block):
                begin = clock()
                op(i % rows)
                into.append((clock() - begin) / 1_000)
            cursor[name] = start + block
    return samples


def batch_ops(peers: sp.Peers, rows: np.ndarray) -> dict[str, Callable[[], Any]]:
    """One call per engine that scores all `rows` on one thread."""
    import tl2cgen  # noqa: PLC0415
    import treelite.gtil  # noqa: PLC0415

    ops: dict[str, Callable[[], Any]] = {
        "ours": lambda: peers.ours.predict_batch(rows),
        "lightgbm": lambda: peers.booster.predict(rows, num_threads=1),
        "tl2cgen": lambda: peers.tl2cgen.predict(tl2cgen.DMatrix(rows)).reshape(-1),
        "gtil": lambda: treelite.gtil.predict(peers.treelite, rows, nthread=1).reshape(-1),
    }
    if (lleaves := peers.lleaves) is not None:
        ops["lleaves"] = lambda: lleaves.predict(rows, n_jobs=1)
    return ops


def batch_rates(ops: dict[str, Callable[[], Any]], rows: int, rounds: int) -> dict[str, float]:
    """Rows/s of each op: the median of `rounds` rounds that rotate which op goes first."""
    seconds: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for op in ops.values():
        op()
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            gc.collect()
            start = time.perf_counter()
            ops[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: round(rows / common.median(values)) for name, values in seconds.items()}


def measure_model(peers: sp.Peers, rows: np.ndarray, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """Single-row latencies, batch rates, the C floor and parity."""
    n = len(rows)
    ops = single_ops(peers, rows)
    samples = latencies(ops, n, sizes.single_calls, sizes.block)
    single = {
        name: {f"p{q}_us": round(common.percentile(values, q), 2) for q in (50, 99)}
        for name, values in samples.items()
    }
    program, rows_file = sp.build_floor(peers.outcome, tmp), sp.write_rows(rows, tmp / "rows.f64")
    floor = {
        "ours": sp.run_floor(program, peers.outcome.library_path, rows_file, n, sizes.floor_rounds)
    }
    bops = batch_ops(peers, rows)
    rates = batch_rates(bops, n, sizes.batch_rounds)
    rates["c_floor_batch"] = round(1e9 / floor["ours"]["batch_best_ns_per_row"])
    reference = peers.booster.predict(rows, num_threads=1)
    outputs = {name: np.asarray(op(), dtype=np.float64) for name, op in bops.items()}
    diffs = {name: float(np.max(np.abs(out - reference))) for name, out in outputs.items()}
    scored = np.array([peers.ours.predict_one(rows[i]) for i in range(n)])
    diffs["ours_single"] = float(np.max(np.abs(scored - reference)))
    return {
        "trees": peers.trees,
        "mean_leaves": peers.mean_leaves,
        "nan_rows": int(np.isnan(rows).any(axis=1).sum()),
        "build_seconds": {k: round(v, 1) for k, v in peers.seconds.items()},
        "single": single,
        "floor": floor,
        "batch_rows_per_s": rates,
        "max_abs_diff_vs_lightgbm": diffs,
        "ours_certificate_max_abs_diff": peers.outcome.certificate.max_abs_diff,
    }


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Each goal's value and PASS or MISS (H1 only when it was measured)."""
    small, large = figures["models"]
    p50 = {
        key: {k: v["p50_us"] for k, v in m["single"].items()}
        for key, m in (("s", small), ("l", large))
    }
    values: dict[str, float] = {
        "s1": p50["l"]["lightgbm"] / p50["l"]["ours"],
        "s2": p50["s"]["lightgbm"] / p50["s"]["ours"],
        "s3": p50["l"]["ours"] / (large["floor"]["ours"]["row_p50_ns"] / 1_000),
    }
    values["s4"] = min(m[p] / m["ours"] for m in p50.values() for p in PEERS if p in m)
    values["s5"] = min(
        m["batch_rows_per_s"]["ours"] / m["batch_rows_per_s"]["lightgbm"] for m in (small, large)
    )
    values["s6"] = max(
        m["max_abs_diff_vs_lightgbm"][k] for m in (small, large) for k in ("ours", "ours_single")
    )
    if figures.get("http", {}).get("ratio") is not None:
        values["h1"] = figures["http"]["ratio"]
    result = {}
    for key, value in values.items():
        _, op, goal = GOALS[key]
        passed = value <= goal if op == "<=" else value >= goal
        result[key] = (value if key == "s6" else round(value, 2), "PASS" if passed else "MISS")
    return result


def report(figures: dict[str, Any]) -> str:
    lines = [f"lleaves: {figures['lleaves'] or 'not installed (skipped)'}", ""]
    for model in figures["models"]:
        single, floor = model["single"], model["floor"]
        ours = single["ours"]["p50_us"]
        lines += [
            f"model: {model['trees']} trees, {model['mean_leaves']} leaves/tree on average; "
            f"{model['nan_rows']} of the rows have NaNs; builds (s): {model['build_seconds']}",
            f"  single row, distinct rows{'':9}{'p50 µs':>9}{'p99 µs':>9}{'p50/ours':>10}",
            *(
                f"    {name:<30}{v['p50_us']:>9}{v['p99_us']:>9}{v['p50_us'] / ours:>9.2f}x"
                for name, v in single.items()
            ),
        ]
        for path in ("row", "predict"):
            found = floor["ours"]
            if f"{path}_p50_ns" not in found:  # a library without TL2cgen's `predict`
                continue
            p50, p99 = found[f"{path}_p50_ns"] / 1e3, found[f"{path}_p99_ns"] / 1e3
            entry = "ml_predict_row" if path == "row" else "predict, filled"
            label = f"C floor {entry}"
            lines.append(f"    {label:<30}{p50:>9.2f}{p99:>9.2f}{p50 / ours:>9.2f}x")
        rates = model["batch_rows_per_s"]
        lines.append(f"  batch of {figures['sizes']['rows']} rows, one thread: rows/s, x ours")
        lines += [
            f"    {name:<30}{rate:>12}{rate / rates['ours']:>9.2f}x" for name, rate in rates.items()
        ]
        diffs = model["max_abs_diff_vs_lightgbm"]
        lines += [
            "  max |engine - lightgbm| on the rows: "
            + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items()),
            "",
        ]
    if "http" in figures:
        lines += [*score_http.report_lines(figures["http"]), ""]
    lines.append("SUMMARY")
    for key, (value, verdict) in figures["verdicts"].items():
        label, op, goal = GOALS[key]
        lines.append(f"    {key.upper()} {label:<28}{value:>9}  goal {op} {goal}  {verdict}")
    notes = figures["notes"]
    return "\n".join([*lines, "    machine: " + ", ".join(f"{k}={v}" for k, v in notes.items())])


def notes() -> dict[str, Any]:
    """Cores, load and versions that move the numbers."""
    from importlib.metadata import version  # noqa: PLC0415

    return {
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{name: version(name) for name in ("lightgbm", "treelite", "tl2cgen")},
    }


def main(sizes: Sizes, http: bool) -> dict[str, Any]:
    x_train, y_train = sp.make_rows(sizes.train_rows, seed=1)
    rows, _ = sp.make_rows(sizes.rows, seed=2)
    lleaves = sp.lleaves_available()
    figures: dict[str, Any] = {"sizes": asdict(sizes), "lleaves": lleaves, "notes": notes()}
    figures["models"] = []
    with tempfile.TemporaryDirectory(prefix="ml-bench-score-") as tmp:
        for trees in sizes.trees:
            booster = sp.train(x_train, y_train, trees, seed=3)
            workdir = Path(tmp) / f"t{trees}"
            peers = sp.build_peers(booster, workdir, use_lleaves=lleaves is not None)
            figures["models"].append(measure_model(peers, rows, sizes, workdir))
            sp.close(peers)
        if http:
            large = Path(tmp) / f"t{sizes.trees[1]}" / "model.txt"
            http_figures = score_http.measure(large, rows, sizes.http_requests, sizes.http_seconds)
            figures["http"] = http_figures | {"trees": sizes.trees[1]}
    return figures | {"verdicts": verdicts(figures)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models and counts")
    parser.add_argument("--no-http", action="store_true", help="skip H1 (the server)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    figures = main(QUICK if args.quick else FULL, http=not args.no_http)
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
