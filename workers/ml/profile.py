"""The training reference of each feature, stored with a version and compared with live windows.

Counts are kept, not proportions: PSI and chi-square then use the exact reference figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from domain.errors import InvalidInput
from workers.ml import tabular

PROFILE_VERSION = 1
DEFAULT_BINS = 10
DEFAULT_SAMPLE = 5_000


class NumericProfile(msgspec.Struct, frozen=True, kw_only=True, tag="numeric"):
    """A numeric feature: quantile bins with their counts, moments and a uniform sample."""

    rows: int
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    # inner bin edges; bin i holds edges[i-1] < x <= edges[i]
    edges: list[float]
    counts: list[int]
    # for KS and Wasserstein, which need values, not bins
    sample: list[float]


class CategoricalProfile(msgspec.Struct, frozen=True, kw_only=True, tag="categorical"):
    """A categorical feature: its categories in code order and how often each occurred."""

    rows: int
    missing: int
    # values past the category limit: the model sees them as missing
    other: int
    categories: list[str]
    counts: list[int]


FeatureProfile = NumericProfile | CategoricalProfile


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """Every feature of a version's training rows, in the model's feature order."""

    version: int = PROFILE_VERSION
    rows: int
    feature_names: list[str]
    features: dict[str, FeatureProfile]

    def categorical_maps(self) -> dict[str, list[str]]:
        """The category list of each categorical feature (index = code)."""
        return {
            name: feature.categories
            for name, feature in self.features.items()
            if isinstance(feature, CategoricalProfile)
        }


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Profile)


def dumps(profile: Profile) -> bytes:
    """The profile as JSON bytes (stable: same profile, same bytes)."""
    return _ENCODER.encode(profile)


def loads(data: bytes | Profile | Mapping[str, Any]) -> Profile:
    """A profile from its JSON bytes (or a decoded mapping); InvalidInput when malformed."""
    if isinstance(data, Profile):
        return data
    try:
        if isinstance(data, bytes):
            return _DECODER.decode(data)
        return msgspec.convert(data, Profile)
    except msgspec.ValidationError as error:
        raise InvalidInput(f"not a feature profile: {error}") from error


def build(
    table: tabular.Columns,
    feature_names: Sequence[str],
    categorical_maps: Mapping[str, Sequence[str]],
    *,
    seed: int,
    bins: int = DEFAULT_BINS,
    sample_size: int = DEFAULT_SAMPLE,
) -> Profile:
    """Profile the given features of a table (categorical ones by their category lists)."""
    tabular.require(table, feature_names)
    rng = np.random.default_rng(seed)
    features: dict[str, FeatureProfile] = {}
    for name in feature_names:
        values = tabular.column(table, name)
        categories = categorical_maps.get(name)
        if categories is None:
            features[name] = numeric(tabular.numeric(values, name), rng, bins, sample_size)
        else:
            features[name] = categorical(values, list(categories))
    return Profile(
        rows=tabular.row_count(table), feature_names=list(feature_names), features=features
    )


def numeric(
    values: tabular.Matrix, rng: np.random.Generator, bins: int, sample_size: int
) -> NumericProfile:
    """Profile one numeric column (NaN = missing)."""
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return NumericProfile(
            rows=values.size, missing=values.size, mean=None, std=None, min=None, max=None,
            edges=[], counts=[0], sample=[],
        )  # fmt: skip
    # repeated values collapse edges: a 0/1 flag gets one edge and two bins
    edges = np.unique(np.quantile(valid, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, valid, side="left"), minlength=edges.size + 1)
    sample = valid if valid.size <= sample_size else rng.choice(valid, sample_size, replace=False)
    return NumericProfile(
        rows=values.size,
        missing=int(values.size - valid.size),
        mean=float(valid.mean()),
        std=float(valid.std()),
        min=float(valid.min()),
        max=float(valid.max()),
        edges=edges.tolist(),
        counts=counts.tolist(),
        sample=np.sort(sample).tolist(),
    )


def categorical(values: Any, categories: list[str]) -> CategoricalProfile:
    """Profile one categorical column against its category list."""
    found = tabular.codes(values, categories)
    known = found[~np.isnan(found)].astype(np.int64)
    missing = int(values.null_count)
    return CategoricalProfile(
        rows=len(values),
        missing=missing,
        other=int(found.size - known.size - missing),
        categories=categories,
        counts=np.bincount(known, minlength=len(categories)).tolist(),
    )
