"""A version's input schema: rows by position, or features by name with text categories."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from domain.errors import InvalidInput

FeatureValue = float | str | bool | None


class FeatureSchema:
    """How one version reads `{features: {name: value}}` into its input row."""

    __slots__ = ("_codes", "_index", "names")

    def __init__(self, names: Sequence[str], categories: Mapping[str, Sequence[str]]) -> None:
        self.names = tuple(names)
        self._index = {name: position for position, name in enumerate(self.names)}
        # code = the category's index in the version's list (how training encoded it)
        self._codes = {
            self._index[name]: {str(text): float(code) for code, text in enumerate(known)}
            for name, known in categories.items()
            if name in self._index
        }

    @classmethod
    def of_version(cls, names: Sequence[str], params: Mapping[str, Any]) -> FeatureSchema:
        """The schema of a version: its feature names and `params["categories"]`, if any."""
        found = params.get("categories")
        categories = found if isinstance(found, dict) else {}
        lists = {str(k): v for k, v in categories.items() if isinstance(v, list)}
        return cls(names, lists)

    def row(self, features: Mapping[str, FeatureValue]) -> list[float]:
        """The input row of named features; InvalidInput for unknown or missing names."""
        index = self._index
        if len(features) != len(index) or not all(name in index for name in features):
            raise self._mismatch(features)
        row = [math.nan] * len(index)
        for name, value in features.items():
            position = index[name]
            codes = self._codes.get(position)
            if codes is not None:
                row[position] = math.nan if value is None else codes.get(_text(value), math.nan)
            elif value is None:
                continue
            elif isinstance(value, str):
                raise InvalidInput(
                    f"feature {name!r} is numeric, not text: {value[:40]!r}", field=name
                )
            else:
                row[position] = float(value)
        return row

    def _mismatch(self, features: Mapping[str, FeatureValue]) -> InvalidInput:
        unknown = sorted(set(features) - set(self._index))
        missing = [name for name in self.names if name not in features]
        parts = [f"unknown: {', '.join(unknown)[:400]}"] if unknown else []
        parts += [f"missing: {', '.join(missing)[:400]}"] if missing else []
        return InvalidInput(
            "features must name exactly the version's features (null for a missing value); "
            + "; ".join(parts),
            field="features",
        )


def _text(value: float | str | bool) -> str:
    """A value's spelling as a category, as training spelled non-text columns."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(int(value)) if float(value).is_integer() else repr(float(value))
