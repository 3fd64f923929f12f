"""Validation of uploaded models and datasets. Synchronous: callers run these in a thread.

Nothing here unpickles. LightGBM and XGBoost models are text and JSON; scikit-learn models come
as skops archives whose every stored type is checked against an allow-list before anything is
built. Every model must also load in Treelite, because compiling it needs that. LightGBM files
are read by both libraries in the sandbox's child processes, never in this one.

The ML libraries are imported inside the functions: scikit-learn and LightGBM take seconds to
import, and the API imports this module at startup although only uploads need them.
"""

from __future__ import annotations

import json
import mmap
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from itertools import takewhile
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from app.services.lightgbm_sandbox import LightGBMSandbox, Reading, native_reason
from domain.errors import InvalidInput

MODEL_FORMATS = ("lightgbm", "xgboost-json", "sklearn-skops")
_LGB, _XGB, _SKL = (
    "not a LightGBM text model",
    "not an XGBoost JSON model",
    "not a usable skops model",
)
_T = TypeVar("_T")


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What an accepted model file declares."""

    format: str
    feature_names: list[str]
    num_features: int
    num_trees: int
    objective: str | None


class DatasetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Shape of an accepted dataset."""

    format: Literal["csv", "parquet"]
    rows: int
    columns: list[str]


def inspect_model(path: Path, fmt: str, sandbox: LightGBMSandbox | None = None) -> ModelInfo:
    """Check a model file of format `fmt` and describe it; InvalidInput saying why not.

    LightGBM files are read in `sandbox`; without one, in a sandbox started for this file.
    """
    if fmt == "lightgbm":
        return _lightgbm(path, sandbox)
    if fmt == "xgboost-json":
        return _xgboost(path)
    if fmt == "sklearn-skops":
        return _skops(path)
    raise InvalidInput(f"unknown model format {fmt!r}; expected one of {', '.join(MODEL_FORMATS)}")


def inspect_dataset(path: Path) -> DatasetInfo:
    """Check a CSV or Parquet dataset and count its rows; InvalidInput saying why not."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise InvalidInput("the dataset is empty")
    return _parquet(path) if magic == b"PAR1" else _csv(path)


def _call(what: str, action: Callable[[], _T]) -> _T:
    """Run a library call on uploaded bytes; its failure becomes InvalidInput(`what`: reason)."""
    try:
        return action()
    except Exception as error:
        reason = native_reason(str(error)) or type(error).__name__
        raise InvalidInput(f"{what}: {reason}") from error


_END_TREES, _PARAMETERS, _END_PARAMETERS = (
    b"\nend of trees",
    b"\nparameters:",
    b"\nend of parameters",
)
# bytes of text: tab, newlines and everything printable (UTF-8 feature names included)
_TEXT_BYTES = bytes([9, 10, 13, *range(32, 127), *range(128, 256)])


def _lightgbm(path: Path, sandbox: LightGBMSandbox | None) -> ModelInfo:
    header = _lightgbm_header(path)
    _refuse_zero_as_missing(path)
    # the parsers crash and spin on hostile files: they read them in the sandbox
    reading = _lightgbm_read(path, sandbox)
    trees, features = reading.lightgbm.trees, reading.lightgbm.features
    treelite = reading.treelite
    assert treelite is not None  # LightGBM read it, so Treelite was asked
    if treelite.trees != trees:
        raise InvalidInput(f"{_LGB}: LightGBM reads {trees} trees, Treelite {treelite.trees}")
    if treelite.features != features:
        raise InvalidInput(
            f"{_LGB}: LightGBM reads {features} features, Treelite {treelite.features}"
        )
    names = header.get("feature_names", "").split()
    if len(names) != features:
        raise InvalidInput(f"{_LGB}: {len(names)} feature names for {features} features")
    objective = header.get("objective", "").split()
    return ModelInfo(
        format="lightgbm",
        feature_names=names,
        num_features=features,
        num_trees=trees,
        objective=objective[0] if objective else None,
    )


def _lightgbm_header(path: Path) -> dict[str, str]:
    """The header's `key=value` lines, after checks that keep garbage from LightGBM's parser."""
    with path.open("rb") as handle:
        if handle.readline(16).rstrip() != b"tree":
            raise InvalidInput(f"{_LGB}: it does not start with the line 'tree'")
        seen, tail = set[bytes](), b""
        while chunk := handle.read(1 << 20):
            if chunk.translate(None, _TEXT_BYTES):
                raise InvalidInput(f"{_LGB}: it contains binary (control) bytes")
            window = tail + chunk
            # the markers sit near a model's end: searched from there
            markers = (_END_TREES, _PARAMETERS, _END_PARAMETERS)
            seen.update(m for m in markers if window.rfind(m) >= 0)
            tail = chunk[-32:]
        # a parameters section without its end line makes LightGBM read past the buffer
        if _END_TREES not in seen or (_PARAMETERS in seen and _END_PARAMETERS not in seen):
            raise InvalidInput(f"{_LGB}: a section has no end line, the file is truncated")
        handle.seek(0)
        # the header ends at the first blank line
        lines = (raw.decode("utf-8", "replace").strip() for raw in handle)
        pairs = (line.partition("=") for line in takewhile(bool, lines))
        return {key: value for key, sep, value in pairs if sep}


# LightGBM's decision_type: bit 0 categorical, bits 2-3 the missing type (0 None, 1 Zero, 2 NaN)
_MISSING_ZERO = 1
# lines after the first (that one is "tree"); a literal start makes the search fast, as `^` does not
_ZERO_AS_MISSING = b"\n[zero_as_missing: 1]"
_DECISION_TYPES = re.compile(rb"\ndecision_type=([^\n]*)")


def _refuse_zero_as_missing(path: Path) -> None:
    """Refuse, by name, a model trained with `zero_as_missing=True`.

    Its splits send 0.0 where missing values go; Treelite imports them without that rule, so
    the compiled library would disagree with LightGBM on every zero (the certificate would fail
    with only a number). Refused here as `linear_tree=True` is (Treelite refuses that itself).
    The file (not empty: its header was read) is searched mapped, not read line by line: that
    took half a millisecond on a 50-tree model.
    """
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(_ZERO_AS_MISSING) < 0:
            kinds = set[bytes]()
            for line in _DECISION_TYPES.finditer(data):
                kinds.update(line[1].split())
            numbers = (int(v) for v in kinds if v.isdigit())
            if not any(not k & 1 and (k >> 2) & 3 == _MISSING_ZERO for k in numbers):
                return
    raise InvalidInput(
        f"{_LGB}: LightGBM models trained with zero_as_missing=True are not supported (the "
        "compiled scorer cannot treat zeros as missing); retrain with zero_as_missing=False "
        "and pass missing values as NaN",
        field="artifact",
    )


def _lightgbm_read(path: Path, sandbox: LightGBMSandbox | None) -> Reading:
    if sandbox is None:
        with LightGBMSandbox(1) as once:
            return _lightgbm_read(path, once)
    reading = sandbox.probe(path)
    if reading.error is not None:
        raise InvalidInput(f"{_LGB}: {reading.error}")
    return reading


class _XGBObjective(msgspec.Struct):
    name: str


class _XGBLearner(msgspec.Struct):
    feature_names: list[str] = msgspec.field(default_factory=list)
    objective: _XGBObjective | None = None


class _XGBDocument(msgspec.Struct):
    learner: _XGBLearner


def _xgboost(path: Path) -> ModelInfo:
    data = path.read_bytes()
    if data[:64].lstrip()[:1] != b"{":
        raise InvalidInput(f"{_XGB}: it is not a JSON object (binary and UBJSON are not accepted)")
    # what Treelite ignores (names, objective); unknown fields are skipped, not built
    learner = _call(_XGB, lambda: msgspec.json.decode(data, type=_XGBDocument)).learner
    import treelite  # noqa: PLC0415 - see module docstring

    load = treelite.frontend.from_xgboost_json
    model = _call(f"{_XGB}: Treelite cannot import it", lambda: load(data))
    features = int(model.num_feature)
    names = learner.feature_names or [f"f{i}" for i in range(features)]
    if len(names) != features:
        raise InvalidInput(f"{_XGB}: {len(names)} feature names for {features} features")
    return ModelInfo(
        format="xgboost-json",
        feature_names=names,
        num_features=features,
        num_trees=int(model.num_tree),
        objective=learner.objective.name if learner.objective else None,
    )


def _table(text: str) -> frozenset[str]:
    """`module: Name Name ...` lines as a set of `module.Name`."""
    rows = (line.partition(":") for line in text.strip().splitlines())
    return frozenset(f"{mod.strip()}.{name}" for mod, _, names in rows for name in names.split())


# Top-level estimators accepted from a skops file: the tree ensembles Treelite compiles.
SKLEARN_ENSEMBLES = _table("""
    sklearn.ensemble._forest: RandomForestClassifier RandomForestRegressor
    sklearn.ensemble._forest: ExtraTreesClassifier ExtraTreesRegressor
    sklearn.ensemble._gb: GradientBoostingClassifier GradientBoostingRegressor
    sklearn.ensemble._hist_gradient_boosting.gradient_boosting: HistGradientBoostingClassifier
    sklearn.ensemble._hist_gradient_boosting.gradient_boosting: HistGradientBoostingRegressor
    sklearn.ensemble._iforest: IsolationForest
""")
_LOSSES = """AbsoluteError ExponentialLoss HalfBinomialLoss HalfGammaLoss HalfMultinomialLoss
    HalfPoissonLoss HalfSquaredError HalfTweedieLoss HalfTweedieLossIdentity HuberLoss
    PinballLoss"""
# Every type a skops file may contain. skops' own defaults trust every scikit-learn estimator
# and more (a LogisticRegression or a Pipeline loads without a question), so the archive's
# schema is checked against this list before skops sees the file. The last five lines are
# HistGradientBoosting's categorical preprocessing: its FunctionTransformer can only hold
# functions that are on this list themselves.
SKOPS_ALLOWED_TYPES = SKLEARN_ENSEMBLES | _table(f"""
    builtins: dict list tuple str int float bool slice NoneType
    numpy: ndarray dtype bool bool_ str_ float16 float32 float64 int8 int16 int32 int64
    numpy: uint8 uint16 uint32 uint64
    numpy.random.mtrand: RandomState
    numpy.random._generator: Generator
    sklearn.tree._tree: Tree
    sklearn.tree._classes: DecisionTreeClassifier DecisionTreeRegressor
    sklearn.tree._classes: ExtraTreeClassifier ExtraTreeRegressor
    sklearn.ensemble._hist_gradient_boosting.predictor: TreePredictor
    sklearn.ensemble._hist_gradient_boosting.binning: _BinMapper
    sklearn.dummy: DummyClassifier DummyRegressor
    sklearn.preprocessing._label: LabelEncoder
    sklearn._loss.loss: {" ".join(_LOSSES.split())}
    sklearn._loss._loss: {" ".join(f"Cy{loss}" for loss in _LOSSES.split())}
    sklearn._loss.link: IdentityLink LogitLink HalfLogitLink LogLink MultinomialLogit Interval
    sklearn.compose._column_transformer: ColumnTransformer
    sklearn.preprocessing._encoders: OrdinalEncoder
    sklearn.preprocessing._function_transformer: FunctionTransformer
    functools: partial
    sklearn.utils.validation: check_array
""")
# skops node kinds that build objects from their declared type only (no methods, operators)
_SKOPS_LOADERS = frozenset(
    {
        *("ObjectNode", "DictNode", "ListNode", "TupleNode", "JsonNode", "NdArrayNode"),
        *("DTypeNode", "TypeNode", "TreeNode", "LossNode", "RandomStateNode", "SliceNode"),
        *("RandomGeneratorNode", "PartialNode", "FunctionNode"),
    }
)
_MAX_UNZIPPED = 8 << 30  # a model's arrays, uncompressed; past this it is a zip bomb
# skops stores its entries uncompressed (its archives unpack to 0.95-1.0 times their size,
# measured on forests and boosted trees); even deflated, a model's numbers and schema unpack
# to a few times their size. An archive unpacking to more than this many times its size (or
# a megabyte) is a zip bomb: a 1 MB upload of one unpacked to 1 GB cost the server 2 GB and
# held its event loop for seconds while `schema.json` was read and parsed.
_MAX_INFLATION = 20


def load_skops_estimator(path: Path) -> Any:
    """A fitted tree ensemble from a skops archive, every stored type allow-listed first."""
    if not zipfile.is_zipfile(path):
        raise InvalidInput(f"{_SKL}: not a skops archive (pickles are never accepted)")
    _refuse(_skops_types(_call(_SKL, lambda: _skops_schema(path))))
    import skops.io  # type: ignore[import-untyped]  # noqa: PLC0415 - see module docstring

    # skops' own audit also names types hidden in content (a Generator's bit generator)
    untrusted = _call(_SKL, lambda: [str(name) for name in skops.io.get_untrusted_types(file=path)])
    _refuse(set(untrusted))
    estimator = _call(_SKL, lambda: skops.io.load(path, trusted=untrusted))
    kind = type(estimator)
    if f"{kind.__module__}.{kind.__qualname__}" not in SKLEARN_ENSEMBLES:
        accepted = ", ".join(sorted(name.rsplit(".", 1)[1] for name in SKLEARN_ENSEMBLES))
        raise InvalidInput(f"{_SKL}: {kind.__name__} is not one of {accepted}")
    from sklearn.utils.validation import check_is_fitted  # noqa: PLC0415

    _call(f"{_SKL}: the {kind.__name__} is not fitted", lambda: check_is_fitted(estimator))
    return estimator


def _skops(path: Path) -> ModelInfo:
    estimator = load_skops_estimator(path)
    import treelite.sklearn  # noqa: PLC0415 - see module docstring

    load = treelite.sklearn.import_model
    model = _call(f"{_SKL}: Treelite cannot import it", lambda: load(estimator))
    features = int(model.num_feature)
    stored = getattr(estimator, "feature_names_in_", None)
    names = [str(name) for name in stored] if stored is not None else []
    objective = getattr(estimator, "loss", None) or getattr(estimator, "criterion", None)
    return ModelInfo(
        format="sklearn-skops",
        feature_names=names or [f"x{i}" for i in range(features)],
        num_features=features,
        num_trees=int(model.num_tree),
        objective=objective if isinstance(objective, str) else None,
    )


def _skops_schema(path: Path) -> object:
    # zipfile reads no entry past its declared size: the declared sizes bound what is read
    limit = min(_MAX_UNZIPPED, _MAX_INFLATION * max(path.stat().st_size, 1 << 20))
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > limit:
            raise ValueError(f"it unpacks to {unpacked} bytes, more than {limit}: a zip bomb")
        return json.loads(archive.read("schema.json"))


def _skops_types(schema: object) -> set[str]:
    """Every `module.class` a skops schema declares; InvalidInput for a refused node kind."""
    found: set[str] = set()
    stack = [schema]
    while stack:  # iterative: the nesting depth is the uploader's choice
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                loader, module, name = (
                    node.get(k) for k in ("__loader__", "__module__", "__class__")
                )
                if not (isinstance(module, str) and isinstance(name, str)):
                    raise InvalidInput(f"{_SKL}: malformed schema node")
                if loader not in _SKOPS_LOADERS:
                    raise InvalidInput(f"{_SKL}: {module}.{name} is stored as {loader}, refused")
                found.add(f"{module}.{name}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _refuse(types: set[str]) -> None:
    refused = sorted(types - SKOPS_ALLOWED_TYPES)
    if refused:
        raise InvalidInput(f"{_SKL}: types not on the allow-list: {', '.join(refused)}")


def _parquet(path: Path) -> DatasetInfo:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

    def read() -> tuple[list[str], int, int]:
        with pq.ParquetFile(path) as file:
            # decoding every page is what finds corruption the footer cannot show
            rows = sum(int(batch.num_rows) for batch in file.iter_batches(batch_size=65_536))
            return [str(name) for name in file.schema_arrow.names], rows, file.metadata.num_rows

    columns, rows, declared = _call("not a readable Parquet file", read)
    if rows != declared:
        raise InvalidInput(f"not a readable Parquet file: {rows} rows where {declared} declared")
    return _dataset("parquet", rows, columns)


def _csv(path: Path) -> DatasetInfo:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.csv as pcsv  # type: ignore[import-untyped]  # noqa: PLC0415

    options = pcsv.ReadOptions(block_size=16 << 20)

    def header() -> list[str]:
        with pcsv.open_csv(path, read_options=options) as reader:
            return [str(name) for name in reader.schema.names]

    def count(columns: list[str]) -> int:
        # every column as text: types inferred from the first block could refuse later ones,
        # while this still checks UTF-8 and that every row has every column
        convert = pcsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()))
        with pcsv.open_csv(path, read_options=options, convert_options=convert) as reader:
            return sum(int(batch.num_rows) for batch in reader)

    columns = _unique(_call("not a readable CSV file", header))
    return _dataset("csv", _call("not a readable CSV file", lambda: count(columns)), columns)


def _unique(columns: list[str]) -> list[str]:
    duplicated = sorted(name for name, count in Counter(columns).items() if count > 1)
    if duplicated:
        raise InvalidInput(f"duplicate column names: {', '.join(duplicated)}")
    return columns


def _dataset(fmt: Literal["csv", "parquet"], rows: int, columns: list[str]) -> DatasetInfo:
    if not columns:
        raise InvalidInput(f"the {fmt} dataset has no columns")
    _unique(columns)
    if rows == 0:
        raise InvalidInput(f"the {fmt} dataset has a header but no rows")
    return DatasetInfo(format=fmt, rows=rows, columns=columns)
