"""Compiling a model to a shared library and certifying it against the model's own library.

`compile_model` chains three public steps, so a test can tamper between them: `generate`
(Treelite loads the model, TL2cgen writes C, our batch entry points are added; or, for the
LightGBM models forest.py accepts, node tables for forest.c), `build` (the system C compiler
makes the shared library) and `certify` (parity with the native model).
Synchronous and CPU-bound: the job layer runs it in a process pool.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy.typing as npt

from app.scoring.library import CompiledLibrary
from workers.ml.forest import forest_tables
from workers.ml.native import load_native
from workers.ml.parity import ParityCertificate, certificate_rows, certify

__all__ = [
    "BuiltLibrary",
    "CompileError",
    "CompileOutcome",
    "GeneratedSource",
    "ParityCertificate",
    "build",
    "certificate_rows",
    "certify",
    "compile_model",
    "generate",
    "load_treelite",
]

BATCH_SOURCE = Path(__file__).with_name("batch.c")
FOREST_SOURCE = Path(__file__).with_name("forest.c")
FOREST_DEFINE = "-DML_FOREST_TABLES"  # in the flags of a library built from forest.c
# Portable code only: no -march=native, since a library built on one worker is served by any
# machine of the fleet. No -ffast-math either: it would drop the NaN tests and break parity.
# -Bsymbolic binds our entry points to this library's own `predict`, whatever else is loaded.
COMPILE_FLAGS = ("-O3", "-fPIC", "-std=c11")
LINK_FLAGS = ("-shared", "-Wl,-Bsymbolic")
LIBRARIES = ("-lm",)
_C_TYPES = {"float32": "float", "float64": "double"}
TREES_PER_UNIT = 16  # TL2cgen translation units: gcc time grows faster than a file; see batch.c
MAX_UNITS = 64
BUILD_TIMEOUT_SECONDS = 1800.0
_PREDICT = re.compile(
    r"^void predict\(struct Entry\* data, int pred_margin, (?:float|double)\* result\) \{\n"
    r"(?P<body>.*?)\n\}$",
    re.DOTALL | re.MULTILINE,
)
_UNIT_CALL = re.compile(r"^ *predict_unit(\d+)\(data, result\);$", re.MULTILINE)
_ENTRY_UNION = re.compile(
    r"union Entry \{\s*int missing;\s*(?P<value>float|double) fvalue;\s*int qvalue;\s*\};"
)


class CompileError(Exception):
    """The model could not be turned into a library (no compiler, compiler error, ...)."""


class CompileOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """A built library, how it was built, and its parity certificate."""

    library_path: str
    library_sha256: str
    compiler: str
    flags: list[str]
    compile_seconds: float
    certificate: ParityCertificate


@dataclass(frozen=True, kw_only=True)
class GeneratedSource:
    """C sources ready to build, and the Treelite model they came from."""

    directory: Path
    sources: tuple[Path, ...]
    model: Any
    defines: tuple[str, ...]
    seconds: float


@dataclass(frozen=True, kw_only=True)
class BuiltLibrary:
    """A shared library on disk and how the compiler made it."""

    path: Path
    sha256: str
    compiler: str
    flags: tuple[str, ...]
    seconds: float


def load_treelite(artifact: Path, fmt: str) -> Any:
    """The Treelite model of a model file in format `fmt`."""
    return _load(artifact, fmt)[0]


def _load(artifact: Path, fmt: str) -> tuple[Any, tuple[str, ...]]:
    """The Treelite model, and the defines that make batch.c read inputs as its library does."""
    import treelite  # noqa: PLC0415 - seconds to import; only jobs need it

    if fmt == "lightgbm":
        # LightGBM reads |x| <= kZeroThreshold (1e-35f) as zero
        zero = "-DML_ZERO_THRESHOLD=1.0000000180025095e-35"
        return treelite.frontend.load_lightgbm_model(artifact), (zero,)
    if fmt == "xgboost-json":
        # the bytes, not the path: stored artifacts have no .json suffix to go by
        return treelite.frontend.from_xgboost_json(artifact.read_bytes()), ()
    if fmt == "sklearn-skops":
        import treelite.sklearn  # noqa: PLC0415

        from app.services.artifacts import load_skops_estimator  # noqa: PLC0415

        estimator = load_skops_estimator(artifact)
        # scikit-learn's trees compare float32(x); the histogram models keep float64
        histogram = type(estimator).__name__.startswith("HistGradientBoosting")
        rounding = () if histogram else ("-DML_ROUND_TO_FLOAT32",)
        return treelite.sklearn.import_model(estimator), rounding
    raise CompileError(f"unknown model format {fmt!r}")


def generate(
    artifact: Path, fmt: str, workdir: Path, *, parallel_comp: int | None = None
) -> GeneratedSource:
    """Write the model's C code under `workdir`: forest.c and its tables when forest.py accepts
    the model (unless `parallel_comp` asks for TL2cgen's units), else TL2cgen's code and ours."""
    import tl2cgen  # noqa: PLC0415
    import treelite  # noqa: PLC0415

    started = time.perf_counter()
    directory = workdir / "src"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        model, reading = _load(artifact, fmt)
        # the Treelite model stays the source of the certificate's rows on either path
        forest = fmt == "lightgbm" and parallel_comp is None
        tables = forest_tables(artifact.read_text(errors="replace")) if forest else None
        if tables is not None:
            return _forest_source(directory, model, tables, reading, started)
        units = parallel_comp or min(MAX_UNITS, int(model.num_tree) // TREES_PER_UNIT)
        params = {"parallel_comp": units} if units > 1 else {}
        tl2cgen.generate_c_code(model, directory, params=params)
    except (treelite.TreeliteError, tl2cgen.TL2cgenError) as error:
        # the same model fails the same way again: not worth a retry
        raise CompileError(f"Treelite/TL2cgen cannot compile it: {error}") from error
    value, result = (_C_TYPES.get(str(kind)) for kind in (model.input_type, model.output_type))
    if value is None or result is None:
        raise CompileError(f"no C type for {model.input_type} inputs, {model.output_type} leaves")
    _separate_missing_flag(directory)
    blocks = _unit_blocks(directory, result)
    shutil.copyfile(BATCH_SOURCE, directory / BATCH_SOURCE.name)
    defines = (
        f"-DML_NUM_FEATURE={int(model.num_feature)}",
        f"-DML_VALUE_T={value}",
        f"-DML_RESULT_T={result}",
        *reading,
        *(("-DML_UNIT_BLOCKS",) if blocks else ()),
    )
    return GeneratedSource(
        directory=directory,
        sources=tuple(sorted(directory.glob("*.c"))),
        model=model,
        defines=defines,
        seconds=time.perf_counter() - started,
    )


def _forest_source(
    directory: Path, model: Any, tables: str, reading: tuple[str, ...], started: float
) -> GeneratedSource:
    """forest.c and its node tables (forest.h) in `directory`."""
    (directory / "forest.h").write_text(tables)
    shutil.copyfile(FOREST_SOURCE, directory / FOREST_SOURCE.name)
    defines = (FOREST_DEFINE, f"-DML_NUM_FEATURE={int(model.num_feature)}", *reading)
    return GeneratedSource(
        directory=directory,
        sources=(directory / FOREST_SOURCE.name,),
        model=model,
        defines=defines,
        seconds=time.perf_counter() - started,
    )


def _separate_missing_flag(directory: Path) -> None:
    """Turn TL2cgen's `union Entry` into a struct: a flag that shares bytes with a double
    reads some values as missing (see batch.c)."""
    header = directory / "header.h"
    union = _ENTRY_UNION.search(header.read_text())
    if union is None:
        raise CompileError("TL2cgen's header.h has no `union Entry` of the known layout")
    entry = f"struct Entry {{\n  int missing;\n  int qvalue;\n  {union['value']} fvalue;\n}};"
    for path in (header, *directory.glob("*.c")):
        text = path.read_text().replace(union[0], entry)
        path.write_text(text.replace("union Entry", "struct Entry"))


def _unit_blocks(directory: Path, result_type: str) -> bool:
    """Write blocks.h (see batch.c) if the generated `predict` only calls its units and then
    finishes without reading the row; False, and the plain row loop, otherwise."""
    predict = _PREDICT.search((directory / "main.c").read_text())
    calls = list(_UNIT_CALL.finditer(predict["body"])) if predict else []
    if predict is None or not calls:
        return False
    body = predict["body"]
    head, tail = body[: calls[0].start()], body[calls[-1].end() :]
    between = _UNIT_CALL.sub("", body[calls[0].start() : calls[-1].end()])
    if head.strip() not in ("", "unsigned int tmp;") or between.strip() or "data" in tail:
        return False
    units = ", ".join(f"predict_unit{call[1]}" for call in calls)
    (directory / "blocks.h").write_text(
        f"#define ML_NUM_UNITS {len(calls)}\n"
        f"static void (*const ml_units[])(struct Entry*, {result_type}*) = {{{units}}};\n"
        f"static inline void ml_finish(int pred_margin, {result_type}* result) {{\n"
        f"  unsigned int tmp;\n  (void)tmp;\n{tail}\n}}\n"
    )
    return True


def build(source: GeneratedSource, library_path: Path) -> BuiltLibrary:
    """Compile and link `source` into `library_path` with the system C compiler."""
    compiler = shutil.which("cc")
    if compiler is None:
        raise CompileError("no C compiler (cc) on this worker")
    version = _run([compiler, "--version"], "cc --version").splitlines()
    started = time.perf_counter()
    flags = (*COMPILE_FLAGS, *source.defines)

    def compile_one(path: Path) -> Path:
        target = path.with_suffix(".o")
        _run([compiler, *flags, "-c", str(path), "-o", str(target)], path.name)
        return target

    # one translation unit per process: TL2cgen splits large models for exactly this
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        objects = list(pool.map(compile_one, source.sources))
    library_path.parent.mkdir(parents=True, exist_ok=True)
    partial = library_path.with_name(f".{library_path.name}.partial")
    link = [compiler, *LINK_FLAGS, "-o", str(partial), *map(str, objects), *LIBRARIES]
    _run(link, "link")
    partial.replace(library_path)  # readers never see half a library
    return BuiltLibrary(
        path=library_path,
        sha256=hashlib.sha256(library_path.read_bytes()).hexdigest(),
        compiler=version[0].strip() if version else compiler,
        flags=(*flags, *LINK_FLAGS, *LIBRARIES),
        seconds=time.perf_counter() - started,
    )


def compile_model(
    artifact: Path,
    fmt: str,
    workdir: Path,
    *,
    holdout: npt.ArrayLike | None = None,
    tolerance: float,
    parallel_comp: int | None = None,
) -> CompileOutcome:
    """Generate, build and certify a library for the model in `artifact` under `workdir`."""
    source = generate(artifact, fmt, workdir, parallel_comp=parallel_comp)
    built = build(source, workdir / "model.so")
    native = load_native(artifact, fmt)
    # loaded as the scorer will load it: through the digest check
    library = CompiledLibrary.open(built.path, built.sha256)
    try:
        rows = certificate_rows(source.model, holdout, missing=native.accepts_missing)
        certificate = certify(library, native, rows, tolerance=tolerance)
    except ValueError as error:  # holdout or outputs of other shapes: nothing to compare
        raise CompileError(f"parity: {error}") from error
    return CompileOutcome(
        library_path=str(built.path),
        library_sha256=built.sha256,
        compiler=built.compiler,
        flags=list(built.flags),
        compile_seconds=source.seconds + built.seconds,
        certificate=certificate,
    )


def _run(command: list[str], what: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - the system compiler on files we generated
            command,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CompileError(f"{what}: not done in {BUILD_TIMEOUT_SECONDS:.0f} s") from error
    if done.returncode != 0:
        raise CompileError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout
