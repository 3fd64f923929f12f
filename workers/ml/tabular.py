"""Tables in, float64 matrices out: dataset reading and the one feature encoding every job shares.

A categorical feature is encoded as the index of its value in the feature's category list (the
order training chose and the profile records); a missing or never-seen value becomes NaN, which
LightGBM, scikit-learn and the compiled models all treat as missing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from domain.errors import InvalidInput

Matrix = npt.NDArray[np.float64]
# a pyarrow Table, or columns by name (numpy arrays, lists, pyarrow arrays)
Columns = Any
DatasetFormat = Literal["csv", "parquet"]
# HistGradientBoosting takes at most 255 bins per feature, one of them for missing values
MAX_CATEGORIES = 250


def read_dataset(source: Path | bytes, fmt: DatasetFormat | None = None) -> Any:
    """A CSV or Parquet dataset as a pyarrow Table; the format is sniffed when not given."""
    data = source if isinstance(source, bytes) else None
    if fmt is None:
        head = data[:4] if data is not None else _head(Path(str(source)))
        fmt = "parquet" if head == b"PAR1" else "csv"
    stream = io.BytesIO(data) if data is not None else str(source)
    try:
        if fmt == "parquet":
            return pq.read_table(stream)
        # empty strings in text columns are missing values, as in the numeric ones
        convert = pcsv.ConvertOptions(strings_can_be_null=True)
        # column types are inferred from the first block: a big one sees more of each column
        read = pcsv.ReadOptions(block_size=16 << 20)
        return pcsv.read_csv(stream, read_options=read, convert_options=convert)
    except (pa.ArrowException, OSError) as error:
        raise InvalidInput(f"not a readable {fmt} dataset: {error}") from error


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(4)


def column(table: Columns, name: str) -> Any:
    """One column as a pyarrow ChunkedArray or Array; InvalidInput when absent."""
    if isinstance(table, pa.Table):
        if name not in table.column_names:
            raise InvalidInput(f"the table has no column {name!r}")
        return table.column(name)
    if name not in table:
        raise InvalidInput(f"the table has no column {name!r}")
    values = table[name]
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    return pa.array(
        np.asarray(values) if not isinstance(values, list) else values, from_pandas=True
    )


def column_names(table: Columns) -> list[str]:
    """The names of a table's columns, in order."""
    return list(table.column_names) if isinstance(table, pa.Table) else [str(k) for k in table]


def row_count(table: Columns) -> int:
    """The number of rows of a table (of its first column for a mapping)."""
    if isinstance(table, pa.Table):
        return int(table.num_rows)
    names = column_names(table)
    return len(column(table, names[0])) if names else 0


def is_text(values: Any) -> bool:
    """Whether a column holds text (or dictionary-encoded text): a categorical by default."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def require(table: Columns, names: Sequence[str]) -> None:
    """InvalidInput naming every column the table lacks."""
    present = set(column_names(table))
    absent = [name for name in names if name not in present]
    if absent:
        raise InvalidInput(f"missing feature columns: {', '.join(absent)}")


def numeric(values: Any, name: str) -> Matrix:
    """A numeric or boolean column as float64, NaN where missing."""
    kind = values.type
    types = pa.types
    if not (
        types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind)
    ) and not types.is_null(kind):
        raise InvalidInput(f"feature {name!r} is not numeric ({kind}); declare it categorical")
    as_float = pc.cast(values, pa.float64())
    array: Matrix = np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
    return array


def numeric_column(table: Columns, name: str) -> Matrix:
    """A numeric column of a table as float64, NaN where missing (numpy input is not copied)."""
    if not isinstance(table, pa.Table) and isinstance(table.get(name), np.ndarray):
        raw = table[name]
        if raw.dtype.kind in "fiub":
            return np.asarray(raw, dtype=np.float64)
    return numeric(column(table, name), name)


def as_text(values: Any) -> Any:
    """A column as text (integers and booleans become their decimal/`true` spelling)."""
    return (
        values
        if is_text(values) and not pa.types.is_dictionary(values.type)
        else (pc.cast(values, pa.string()))
    )


def codes(values: Any, categories: Sequence[str]) -> Matrix:
    """A categorical column as category indices (float64), NaN for missing or unseen values."""
    found = pc.index_in(as_text(values), value_set=pa.array(list(categories), pa.string()))
    array: Matrix = np.asarray(
        pc.cast(found, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
    )
    return array


def categories_of(values: Any, limit: int = MAX_CATEGORIES) -> list[str]:
    """The `limit` most frequent values of a column (ties by value), sorted by value."""
    counted = pc.value_counts(pc.drop_null(as_text(values)))
    pairs = zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    )
    ranked = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
    return sorted(str(value) for value, _ in ranked[:limit])


def features_matrix(
    table: Columns, feature_names: Sequence[str], categorical_maps: Mapping[str, Sequence[str]]
) -> Matrix:
    """Rows x features, float64, C order: the input every model of a version expects."""
    require(table, feature_names)
    matrix = np.empty((row_count(table), len(feature_names)), dtype=np.float64)
    for index, name in enumerate(feature_names):
        values = column(table, name)
        categories = categorical_maps.get(name)
        matrix[:, index] = (
            numeric(values, name) if categories is None else codes(values, categories)
        )
    return matrix
