"""Driving the governance API in tests; compile/compliance results are appended as the
jobs will append them (the job runner is its own issue)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import lightgbm
import numpy as np

from app.resources import Resources
from domain import events as ev
from domain.decide import model_stream

_MODEL_CACHE: dict[int, bytes] = {}


def lightgbm_model_bytes(seed: int = 0, trees: int = 5) -> bytes:
    """A small LightGBM binary classifier as a text model file."""
    if seed not in _MODEL_CACHE:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(400, 4))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
        booster = lightgbm.train(
            {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": seed},
            lightgbm.Dataset(x, y, feature_name=["amount", "age", "hour", "merchant"]),
            num_boost_round=trees,
        )
        _MODEL_CACHE[seed] = booster.model_to_string().encode()
    return _MODEL_CACHE[seed]


async def create_model(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, tier: str = "low"
) -> httpx.Response:
    return await client.post(
        "/v1/models",
        json={
            "name": name,
            "risk_tier": tier,
            "owner": "fraud-team",
            "sensitive_features": ["age"],
        },
        headers=headers,
    )


async def register_version(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    *,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
    artifact: bytes | None = None,
) -> httpx.Response:
    meta = metadata or {
        "format": "lightgbm",
        "metrics": {"auc": 0.91},
        "lineage": {"git_commit": "abc123"},
    }
    return await client.post(
        f"/v1/models/{name}/versions",
        files={
            "artifact": (
                "model.txt",
                io.BytesIO(artifact or lightgbm_model_bytes(seed)),
                "text/plain",
            ),
            "metadata": (None, json.dumps(meta), "application/json"),
        },
        headers=headers,
    )


async def record_compiled(resources: Resources, name: str, version: int, diff: float = 0.0) -> None:
    """Append what the compile job appends when parity holds."""
    await resources.store.append(
        model_stream(name),
        [
            ev.VersionCompiled(
                name=name,
                version=version,
                library_sha256=f"{version:064x}",
                max_abs_diff=diff,
                rows_checked=1000,
                compiler="gcc -O2",
            )
        ],
        meta=ev.EventMeta(actor="worker:compile", role="admin"),
        expected_version=None,
    )
    await resources.projector.catch_up()


async def record_compliance(
    resources: Resources, name: str, version: int, passed: bool, report_sha256: str = "c" * 64
) -> None:
    """Append what the compliance job appends."""
    await resources.store.append(
        model_stream(name),
        [
            ev.ComplianceChecked(
                name=name,
                version=version,
                passed=passed,
                report_sha256=report_sha256,
                policy_version=0,
                metrics={"demographic_parity_difference": 0.03},
            )
        ],
        meta=ev.EventMeta(actor="worker:compliance", role="admin"),
        expected_version=None,
    )
    await resources.projector.catch_up()
