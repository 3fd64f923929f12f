"""Reason codes: per-feature contributions (LightGBM `pred_contrib`) of the approved artifact.

The compiled library has no notion of contributions, so the version's own LightGBM model
file is loaded (once, after its digest checks out) and asked for them. The contributions of a
row and its "bias" (the expected value) sum to the row's raw margin, the score before the
link function.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.scoring.routing import Served
from app.store.artifacts import ArtifactStore
from domain.errors import InvalidInput

BIAS = "bias"


class ArtifactRefused(Exception):
    """A stored artifact whose bytes are not the ones the version registered."""


class _Explainer:
    def __init__(self, booster: Any) -> None:
        self.booster = booster
        # one prediction at a time per booster: LightGBM's thread safety varies by version
        self.lock = threading.Lock()

    def contributions(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with self.lock:
            found: npt.NDArray[np.float64] = self.booster.predict(matrix, pred_contrib=True)
        return found


class Explanations:
    """Loads and caches each version's LightGBM booster; computes contributions in a thread."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts
        self._loaded: dict[str, _Explainer] = {}
        self._loading = asyncio.Lock()

    async def explain(
        self, served: Served, matrix: npt.NDArray[np.float64]
    ) -> list[dict[str, float]]:
        """One `{feature: contribution, ..., "bias": value}` per row of `matrix`."""
        if served.format != "lightgbm":
            raise InvalidInput(
                f"explanations need a lightgbm model; version {served.version} is {served.format}",
                field="explain",
            )
        explainer = await self._explainer(served.artifact_sha256)
        values = await asyncio.to_thread(explainer.contributions, matrix)
        names = list(served.schema.names) or list(explainer.booster.feature_name())
        if values.ndim != 2 or values.shape[1] != len(names) + 1:
            raise InvalidInput(
                "explanations are available for single-output models only", field="explain"
            )
        keys = [*names, BIAS]
        return [dict(zip(keys, row, strict=True)) for row in values.tolist()]

    async def _explainer(self, artifact_sha256: str) -> _Explainer:
        found = self._loaded.get(artifact_sha256)
        if found is not None:
            return found
        async with self._loading:
            found = self._loaded.get(artifact_sha256)
            if found is None:
                path = self._artifacts.path_of(artifact_sha256)
                booster = await asyncio.to_thread(_load_booster, path, artifact_sha256)
                found = self._loaded[artifact_sha256] = _Explainer(booster)
        return found


def _load_booster(path: Path, expected_sha256: str) -> Any:
    import lightgbm  # noqa: PLC0415 - a heavy import only explanations need

    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256):
        raise ArtifactRefused(f"artifact {expected_sha256[:12]} was altered (sha256 {actual})")
    return lightgbm.Booster(model_str=data.decode())
