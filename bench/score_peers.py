"""The models and peers of bench/score.py: data, LightGBM training, our compiled library, the
TL2cgen and lleaves builds of the same model, the C-loop floor and the block-wise experiment."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
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
    COMPILE_FLAGS,
    LIBRARIES,
    LINK_FLAGS,
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


def build_blocked(outcome: CompileOutcome, workdir: Path) -> ChunkedBatch | None:
    """The library rebuilt with bench/score_blocked.c; None when it has no unit blocks."""
    source = Path(outcome.library_path).parent / "src"
    if "-DML_UNIT_BLOCKS" not in outcome.flags:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    blocked_o, library = workdir / "blocked.o", workdir / "blocked.so"
    flags = (*COMPILE_FLAGS, *_defines(outcome), f"-I{source}")
    _cc(*flags, "-c", str(HERE / "score_blocked.c"), "-o", str(blocked_o))
    objects = [str(p) for p in source.glob("*.o") if p.name != "batch.o"]
    _cc(*LINK_FLAGS, "-o", str(library), str(blocked_o), *objects, *LIBRARIES)
    return ChunkedBatch(library)


class ChunkedBatch:
    """bench/score_blocked.c's `ml_predict_batch_chunked` in its own library."""

    def __init__(self, library: Path) -> None:
        self._dll = ctypes.CDLL(str(library))  # kept: the function lives as long as it does
        self._function = self._dll.ml_predict_batch_chunked
        self._function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
        self._function.restype = None

    def predict(self, rows: Matrix, chunk: int) -> Matrix:
        """Scores of `rows` through the block-wise loop, `chunk` rows a block."""
        matrix = np.ascontiguousarray(rows, dtype=np.float64)
        out = np.empty(matrix.shape[0], dtype=np.float64)
        self._function(matrix.ctypes.data, matrix.shape[0], out.ctypes.data, chunk)
        return out


BRANCHLESS_LANES = 8  # walks side by side in bench/score_branchless.c


def _c_double(value: float) -> str:
    return "INFINITY" if value == math.inf else repr(value)


def forest_header(booster: lightgbm.Booster, lanes: int) -> str:
    """score_forest.h for bench/score_branchless.c, from LightGBM's own dump of the model."""
    dump = booster.dump_model()
    if not str(dump["objective"]).startswith("binary sigmoid:1"):
        raise ValueError(f"the experiment handles binary sigmoid:1 models, not {dump['objective']}")
    nodes: list[tuple[float, int, int, int]] = []
    values: list[float] = []
    roots, depths = [], []
    for info in dump["tree_info"]:
        roots.append(len(nodes))
        nodes.append((math.inf, len(nodes), 0, 0))
        values.append(0.0)
        queue, deepest = [(info["tree_structure"], roots[-1], 0)], 0
        for node, at, depth in queue:  # breadth first: children adjacent
            if "leaf_value" in node:
                nodes[at], values[at] = (math.inf, at, 0, 0), float(node["leaf_value"])
                deepest = max(deepest, depth)
                continue
            if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
                raise ValueError(f"split not handled by the experiment: {node['decision_type']}")
            threshold = float(node["threshold"])
            nan_right = not node["default_left"] if node["missing_type"] == "NaN" else threshold < 0
            first = len(nodes)
            nodes[at] = (threshold, first, int(node["split_feature"]), int(nan_right))
            nodes += [(math.inf, first, 0, 0), (math.inf, first + 1, 0, 0)]
            values += [0.0, 0.0]
            queue += [
                (node["left_child"], first, depth + 1),
                (node["right_child"], first + 1, depth + 1),
            ]
        depths.append(deepest)
    trees, pad = len(roots), len(nodes)
    nodes.append((math.inf, pad, 0, 0))
    values.append(-0.0)  # x + -0.0 == x for every x: padding trees change no bit
    groups = -(-trees // lanes)
    padded = roots + [pad] * (groups * lanes - trees)
    group_depths = [max(depths[g * lanes : (g + 1) * lanes]) for g in range(groups)]

    def array(kind: str, name: str, items: list[str]) -> str:
        return f"static const {kind} {name}[] = {{{', '.join(items)}}};\n"

    return (
        f"#define BL_NUM_FEATURE {int(dump['max_feature_idx']) + 1}\n#define BL_NUM_TREES {trees}\n"
        f"#define BL_NUM_GROUPS {groups}\n#define BL_LANES {lanes}\n"
        + array(
            "struct bl_node",
            "bl_nodes",
            [f"{{{_c_double(t)}, {left}, {f}, {m}, 0}}" for t, left, f, m in nodes],
        )
        + array("double", "bl_values", [_c_double(v) for v in values])
        + array("int32_t", "bl_roots", [str(r) for r in padded])
        + array("int32_t", "bl_depths", [str(d) for d in depths])
        + array("int32_t", "bl_group_depths", [str(d) for d in group_depths])
    )


def build_branchless(booster: lightgbm.Booster, workdir: Path) -> CompiledLibrary:
    """bench/score_branchless.c built for `booster` and loaded like our libraries."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "score_forest.h").write_text(forest_header(booster, BRANCHLESS_LANES))
    library = workdir / "branchless.so"
    flags = (*COMPILE_FLAGS, f"-I{workdir}", *LINK_FLAGS)
    _cc(*flags, "-o", str(library), str(HERE / "score_branchless.c"), *LIBRARIES)
    return CompiledLibrary.open(library, hashlib.sha256(library.read_bytes()).hexdigest())


def close(peers: Peers) -> None:
    """Free what holds native memory, predictor first (it keeps the TL2cgen library loaded)."""
    with contextlib.suppress(Exception):
        del peers.tl2cgen
