"""The models and peers of bench/score.py: data, LightGBM training, our compiled library, the
TL2cgen and lleaves builds of the same model, the C-loop floor and the block-wise experiment."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import numpy.typing as npt

from app.scoring.library import CompiledLibrary
from workers.ml.compile import (
    MAX_UNITS,
    TREES_PER_UNIT,
    CompileOutcome,
    compile_model,
    load_treelite,
)

Matrix = npt.NDArray[np.float64]
HERE = Path(__file__).parent
FEATURES = 30
NAN_FEATURES = 8  # the first ones; LightGBM learns a default direction for their NaNs
NAN_SHARE = 0.1
LEAVES = 31


def make_rows(rows: int, seed: int) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """Rows of FEATURES values (NaNs in the first NAN_FEATURES, some exact zeros) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    x[:, NAN_FEATURES] = np.round(x[:, NAN_FEATURES])  # many exact zeros: LightGBM's zero rule
    clean = x.copy()
    x[:, :NAN_FEATURES][rng.random((rows, NAN_FEATURES)) < NAN_SHARE] = np.nan
    signal = (
        clean[:, 0]
        + np.sin(2 * clean[:, 1])
        + clean[:, 2] * clean[:, 3]
        + 0.5 * np.abs(clean[:, 8:16]).sum(axis=1)
        - 0.3 * clean[:, 16:24].sum(axis=1)
    )
    y = (signal + rng.normal(scale=1.0, size=rows) > np.median(signal)).astype(np.int64)
    return x, y


def train(x: Matrix, y: npt.NDArray[np.int64], trees: int, seed: int) -> lightgbm.Booster:
    """A LightGBM binary classifier of `trees` trees of up to LEAVES leaves."""
    params = {"objective": "binary", "num_leaves": LEAVES, "verbose": -1, "seed": seed}
    return lightgbm.train(params | {"num_threads": 2}, lightgbm.Dataset(x, y), trees)


@dataclass
class Peers:
    """One model under every engine of the bench; peers that did not build are None."""

    trees: int
    booster: lightgbm.Booster
    artifact: Path
    outcome: CompileOutcome
    ours: CompiledLibrary
    treelite: Any
    tl2cgen: Any
    tl2cgen_path: Path
    lleaves: Any | None
    seconds: dict[str, float] = field(default_factory=dict)
    mean_leaves: float = 0.0


def build_peers(booster: lightgbm.Booster, workdir: Path, use_lleaves: bool) -> Peers:
    """Compile `booster` with compile_model (ours), plain TL2cgen and lleaves."""
    import tl2cgen  # noqa: PLC0415

    workdir.mkdir(parents=True, exist_ok=True)
    trees = booster.num_trees()
    artifact = workdir / "model.txt"
    artifact.write_text(booster.model_to_string())
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    outcome = compile_model(artifact, "lightgbm", workdir / "ours", tolerance=1e-9)
    seconds["ours"] = time.perf_counter() - start
    ours = CompiledLibrary.open(Path(outcome.library_path), outcome.library_sha256)
    model = load_treelite(artifact, "lightgbm")
    # tl2cgen's runtime fills its own 8-byte `union Entry`: it cannot call our library, whose
    # entries are 16-byte structs (compile.py), so the peer is TL2cgen's own build of the model
    start = time.perf_counter()
    # the units compile.py would give TL2cgen's code (ours may be forest tables instead)
    units = min(MAX_UNITS, trees // TREES_PER_UNIT)
    params = {"parallel_comp": units} if units > 1 else {}
    tl2cgen_path = workdir / "tl2cgen.so"
    tl2cgen.export_lib(model, toolchain="gcc", libpath=tl2cgen_path, params=params)
    seconds["tl2cgen"] = time.perf_counter() - start
    predictor = tl2cgen.Predictor(tl2cgen_path, nthread=1)
    peers = Peers(
        trees=trees,
        booster=booster,
        artifact=artifact,
        outcome=outcome,
        ours=ours,
        treelite=model,
        tl2cgen=predictor,
        tl2cgen_path=tl2cgen_path,
        lleaves=None,
        seconds=seconds,
        mean_leaves=_mean_leaves(booster),
    )
    if use_lleaves:
        start = time.perf_counter()
        peers.lleaves = lleaves_model(artifact)
        seconds["lleaves"] = time.perf_counter() - start
    return peers


def _mean_leaves(booster: lightgbm.Booster) -> float:
    counts = [int(tree["num_leaves"]) for tree in booster.dump_model()["tree_info"]]
    return round(sum(counts) / len(counts), 1)


def lleaves_available() -> str | None:
    """lleaves' version when it imports, else None (it is not a project dependency)."""
    try:
        from importlib.metadata import version  # noqa: PLC0415

        import lleaves  # type: ignore[import-untyped]  # noqa: F401, PLC0415
    except ImportError:
        return None
    return version("lleaves")


def lleaves_model(artifact: Path) -> Any:
    """lleaves' compiled model of `artifact` with its default blocking (34 trees a block).

    `fblocksize=num_trees`, which its docs suggest for single rows, took LLVM over 5 minutes
    for 500 trees here, so the default build serves both single rows and batches."""
    import lleaves  # noqa: PLC0415

    model = lleaves.Model(model_file=str(artifact))
    model.compile()
    return model


def write_rows(rows: Matrix, path: Path) -> Path:
    """The rows as raw row-major float64, for the C floor."""
    np.ascontiguousarray(rows, dtype=np.float64).tofile(path)
    return path


def _defines(outcome: CompileOutcome) -> list[str]:
    return [flag for flag in outcome.flags if flag.startswith("-D")]


def _cc(*args: str) -> None:
    compiler = shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc)")
    done = subprocess.run([compiler, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cc {' '.join(args)}:\n{done.stderr[-3000:]}")


_FLOOR_HEADER = (
    "#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
    "#define N_TARGET 1\n#define MAX_N_CLASS 1\n"
    "struct Entry {\n  int missing;\n  int qvalue;\n  double fvalue;\n};\n"
)


def build_floor(outcome: CompileOutcome, workdir: Path) -> Path:
    """The C-loop floor program (bench/score_floor.c) for this library's header and reading."""
    source = Path(outcome.library_path).parent / "src"
    program = workdir / "score_floor"
    defines = _defines(outcome)
    if not (source / "header.h").exists():  # forest tables: no generated `predict` to time
        source = workdir / "floor-header"
        source.mkdir(parents=True, exist_ok=True)
        (source / "header.h").write_text(_FLOOR_HEADER)
        defines += ["-DML_VALUE_T=double", "-DML_RESULT_T=double"]
    # -O2 and no -march=native, as the library itself: the loop is not what is measured
    flags = ("-O2", "-std=c11", *defines, f"-I{source}")
    _cc(*flags, str(HERE / "score_floor.c"), "-o", str(program), "-ldl", "-lm")
    return program


def run_floor(program: Path, library: str, rows_file: Path, rows: int, rounds: int) -> Any:
    """The floor program's figures (ns) over `rows` distinct rows, `rounds` times each."""
    done = subprocess.run(
        [str(program), library, str(rows_file), str(rows), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def close(peers: Peers) -> None:
    """Free what holds native memory, predictor first (it keeps the TL2cgen library loaded)."""
    with contextlib.suppress(Exception):
        del peers.tl2cgen
