"""Real compiled libraries for scoring tests, built once per session, and deployment helpers."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm
import numpy as np

from app.resources import Resources
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import (
    create_model,
    lightgbm_model_bytes,
    register_version,
)
from workers.ml.compile import compile_model

FEATURES = ["amount", "age", "hour", "merchant"]
MERCHANTS = ["books", "food", "games", "travel"]


@dataclass(frozen=True)
class Built:
    """A model file, its certified library, and the booster to compare scores with."""

    artifact: bytes
    library: bytes
    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    categories: dict[str, list[str]]

    @property
    def booster(self) -> lightgbm.Booster:
        return lightgbm.Booster(model_str=self.artifact.decode())


_BUILT: dict[str, Built] = {}


def categorical_model_bytes(trees: int = 20) -> bytes:
    """A binary classifier whose "merchant" feature is categorical (codes of MERCHANTS)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1500, 4))
    x[:, 3] = rng.integers(0, len(MERCHANTS), size=len(x))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.isin(x[:, 3], [1, 3]) - 0.5 > 0).astype(int)
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 7, "min_data_per_group": 5},
        lightgbm.Dataset(x, y, feature_name=FEATURES, categorical_feature=[3]),
        num_boost_round=trees,
    )
    return booster.model_to_string().encode()


def built(kind: str) -> Built:
    """`seed0`, `seed1`, `seed2` (numeric models) or `categorical`, compiled once per session."""
    if kind not in _BUILT:
        if kind == "categorical":
            artifact, categories = categorical_model_bytes(), {"merchant": list(MERCHANTS)}
        else:
            artifact, categories = lightgbm_model_bytes(int(kind.removeprefix("seed"))), {}
        with tempfile.TemporaryDirectory(prefix="scoring-build-") as folder:
            path = Path(folder) / "model.txt"
            path.write_bytes(artifact)
            outcome = compile_model(path, "lightgbm", Path(folder) / "build", tolerance=1e-9)
            library = Path(outcome.library_path).read_bytes()
        assert hashlib.sha256(library).hexdigest() == outcome.library_sha256
        _BUILT[kind] = Built(
            artifact=artifact,
            library=library,
            library_sha256=outcome.library_sha256,
            max_abs_diff=outcome.certificate.max_abs_diff,
            rows_checked=outcome.certificate.rows_checked,
            categories=categories,
        )
    return _BUILT[kind]


async def record_library(resources: Resources, name: str, version: int, model: Built) -> str:
    """Store the real library and append what the compile job appends; its digest."""
    stored = await resources.artifacts.put_bytes(model.library)
    await resources.store.append(
        model_stream(name),
        [
            ev.VersionCompiled(
                name=name,
                version=version,
                library_sha256=stored.sha256,
                max_abs_diff=model.max_abs_diff,
                rows_checked=model.rows_checked,
                compiler="cc -O3",
            )
        ],
        meta=ev.EventMeta(actor="worker:compile", role="admin"),
        expected_version=None,
    )
    await resources.projector.catch_up()
    return stored.sha256


async def add_version(
    client: httpx.AsyncClient, headers: dict[str, str], resources: Resources, name: str, kind: str
) -> int:
    """Register the model of `kind` (with its categories) and record its real library."""
    model = built(kind)
    metadata: dict[str, Any] = {"format": "lightgbm", "metrics": {"auc": 0.9}}
    if model.categories:
        metadata["params"] = {"categories": model.categories}
    created = await register_version(
        client, headers, name, artifact=model.artifact, metadata=metadata
    )
    assert created.status_code == 201, created.text
    version: int = created.json()["version"]
    await record_library(resources, name, version, model)
    return version


async def promote(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    version: int,
    environment: str = "staging",
    strategy: str = "full",
    traffic_percent: float | None = None,
) -> None:
    """Move a deployment pointer (the gates must pass)."""
    body: dict[str, Any] = {"version": version, "environment": environment, "strategy": strategy}
    if traffic_percent is not None:
        body["traffic_percent"] = traffic_percent
    promoted = await client.post(f"/v1/models/{name}/promotions", json=body, headers=headers)
    assert promoted.status_code == 201, promoted.text


async def deployed(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, kind: str = "seed0"
) -> tuple[dict[str, str], int]:
    """Model "fraud" with one version of `kind` champion in staging; a scorer's headers."""
    ci = await auth("ci")
    assert (await create_model(client, ci, "fraud")).status_code == 201
    version = await add_version(client, ci, resources, "fraud", kind)
    await promote(client, ci, "fraud", version)
    await resources.scoring.scorer.refresh()
    return await auth("scorer"), version


async def score(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    body: dict[str, Any],
    environment: str = "staging",
    **params: str,
) -> httpx.Response:
    """POST /v1/score/{name} in an environment."""
    return await client.post(
        f"/v1/score/{name}",
        json=body,
        params={"environment": environment, **params},
        headers=headers,
    )


def rows_with_missing(count: int, seed: int = 0) -> list[list[float | None]]:
    """Distinct rows of the four features, about a tenth of the values missing (None)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(count, len(FEATURES)))
    values[:, 3] = rng.integers(0, len(MERCHANTS), size=count)
    missing = rng.random(values.shape) < 0.1
    return [
        [None if gone else float(v) for v, gone in zip(row, holes, strict=True)]
        for row, holes in zip(values, missing, strict=True)
    ]


def as_matrix(rows: list[list[float | None]]) -> np.ndarray:
    """Rows as the float64 matrix LightGBM reads (None as NaN)."""
    return np.array(rows, dtype=np.float64)
