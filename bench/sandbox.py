"""LightGBM upload check bench: the warm sandbox against a fresh interpreter per file.

S1  `inspect_model` of a 50-tree LightGBM model (header checks, then LightGBM's and Treelite's
    reads in a child process): with the application's warm sandbox vs with none, which starts
    a sandbox (a fresh interpreter) for the file, as every check did before the sandbox
S2  the child's reads alone (`LightGBMSandbox.probe`), warm vs a sandbox started for the file

The two sides alternate which goes first; each figure is the median of `rounds`.

    uv run python -m bench.sandbox [--quick] [--json PATH]
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
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from app.services.artifacts import inspect_model
from app.services.lightgbm_sandbox import LightGBMSandbox
from bench import common

TREES = 50


def model_file(folder: Path) -> Path:
    """A 50-tree binary classifier over 10 features, as a text model file."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2_000, 10))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=TREES)
    path = folder / "model.txt"
    booster.save_model(path)
    return path


def timed(op: Callable[[], object]) -> float:
    gc.collect()  # a collection owed by earlier work must not land in this measurement
    start = time.perf_counter()
    op()
    return time.perf_counter() - start


def alternate(
    warm: Callable[[], object], fresh: Callable[[], object], rounds: int
) -> dict[str, Any]:
    """Median milliseconds of each side over rounds that alternate which goes first."""
    warm(), fresh()  # warm-up: imports, the warm side's child
    seconds: dict[str, list[float]] = {"warm": [], "fresh": []}
    for index in range(rounds):
        pair = [("warm", warm), ("fresh", fresh)]
        for name, op in pair if index % 2 == 0 else reversed(pair):
            seconds[name].append(timed(op))
    warm_s, fresh_s = common.median(seconds["warm"]), common.median(seconds["fresh"])
    return {
        "warm_ms": round(warm_s * 1e3, 2),
        "fresh_ms": round(fresh_s * 1e3, 2),
        "fresh/warm": round(fresh_s / warm_s, 1),
    }


def fresh_probe(path: Path) -> object:
    with LightGBMSandbox(1) as once:
        return once.probe(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 50")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rounds = 10 if args.quick else 50
    with tempfile.TemporaryDirectory() as folder, LightGBMSandbox(1) as sandbox:
        path = model_file(Path(folder))
        figures = {
            "s1_inspect": alternate(
                lambda: inspect_model(path, "lightgbm", sandbox),
                lambda: inspect_model(path, "lightgbm"),
                rounds,
            ),
            "s2_probe": alternate(lambda: sandbox.probe(path), lambda: fresh_probe(path), rounds),
        }
        notes = {"rounds": rounds, "trees": TREES, "model_bytes": path.stat().st_size}
    notes |= {"python": sys.version.split()[0], "machine": platform.machine()}
    notes |= {"cpus": os.cpu_count(), "load": [round(x, 1) for x in os.getloadavg()]}
    report = {"figures": figures, "notes": notes}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
