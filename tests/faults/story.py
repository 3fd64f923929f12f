"""A governance story told to a real `serve` over HTTP, so the log the fault scenarios break
or read holds what production's does: tokens, models, versions compiled by the worker,
approvals, a rejection, promotions, drift alerts, a retirement."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from tests.http.governance_helpers import lightgbm_model_bytes

# the model every scorer of the story can score: four features
FEATURES = ["amount", "age", "hour", "merchant"]


@dataclass(frozen=True)
class Cast:
    """The story's tokens (as headers) and models."""

    ci: dict[str, str]
    approvers: tuple[dict[str, str], dict[str, str]]
    models: tuple[str, ...]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _created(response: httpx.Response) -> dict[str, object]:
    assert response.status_code in (200, 201, 202), response.text
    body: dict[str, object] = response.json()
    return body


async def issue_token(client: httpx.AsyncClient, subject: str, role: str) -> tuple[str, str]:
    """A token issued through the API: (token, token id)."""
    body = await _created(await client.post("/v1/tokens", json={"subject": subject, "role": role}))
    return str(body["token"]), str(body["token_id"])


async def cast(client: httpx.AsyncClient, prefix: str, models: int) -> Cast:
    """Tokens for a CI pipeline and two approvers; `models` models, low risk."""
    ci = bearer((await issue_token(client, f"{prefix}-ci", "ci"))[0])
    ann = bearer((await issue_token(client, f"{prefix}-ann", "approver"))[0])
    bob = bearer((await issue_token(client, f"{prefix}-bob", "approver"))[0])
    names = tuple(f"{prefix}-{n}" for n in range(models))
    for name in names:
        body = {
            "name": name,
            "risk_tier": "low",
            "owner": "fraud-team",
            # non-ASCII and quotes: the canonical bytes of every verifier must agree on them
            "description": f'scores "{name}" — café ✓',
            "tags": ["faults", "story"],
            "sensitive_features": ["age"],
        }
        await _created(await client.post("/v1/models", json=body, headers=ci))
    return Cast(ci=ci, approvers=(ann, bob), models=names)


async def register_version(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, seed: int
) -> int:
    """Upload a small LightGBM model as a new version (the server requests its compile)."""
    return int(str((await registration(client, headers, name, seed))["version"]))


async def registration(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, seed: int
) -> dict[str, object]:
    """`register_version`'s whole answer: the version, its compile job id, its position."""
    metadata = {
        "format": "lightgbm",
        "metrics": {"auc": 0.9 + seed / 100},
        "lineage": {"git_commit": f"{seed:040x}"},
    }
    files = {
        "artifact": ("model.txt", lightgbm_model_bytes(seed), "text/plain"),
        "metadata": (None, json.dumps(metadata), "application/json"),
    }
    return await _created(
        await client.post(f"/v1/models/{name}/versions", files=files, headers=headers)
    )


async def until_compiled(
    client: httpx.AsyncClient, versions: list[tuple[str, int]], seconds: float = 300.0
) -> None:
    """Wait until the worker compiled every one of `versions` (a real gcc compile each: under a
    loaded machine one has taken over 120 s, so the deadline is generous)."""
    deadline = time.monotonic() + seconds
    pending = list(versions)
    while pending:
        name, number = pending[0]
        answer = await client.get(f"/v1/models/{name}/versions/{number}")
        if answer.status_code == 200 and answer.json().get("compiled"):
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"{name} v{number} not compiled in {seconds} s"
        await asyncio.sleep(0.1)


async def approve(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, number: int, decision: str
) -> None:
    path = f"/v1/models/{name}/versions/{number}/approvals"
    body = {"decision": decision, "comment": f"{decision} after review"}
    await _created(await client.post(path, json=body, headers=headers))


async def promote(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, number: int, environment: str
) -> None:
    body = {"version": number, "environment": environment, "strategy": "full"}
    await _created(await client.post(f"/v1/models/{name}/promotions", json=body, headers=headers))


async def drift_alerts(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, number: int, count: int
) -> None:
    """`count` informational drift alerts (policy acts on none of them)."""
    for n in range(count):
        body = {
            "version": number,
            "feature": FEATURES[n % len(FEATURES)],
            "statistic": "psi",
            "value": 0.01 * n,
            "threshold": 0.25,
            "severity": "info",
        }
        await _created(
            await client.post(f"/v1/models/{name}/drift-alerts", json=body, headers=headers)
        )


async def retire(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, number: int
) -> None:
    path = f"/v1/models/{name}/versions/{number}/retirement"
    await _created(await client.post(path, json={"reason": "superseded"}, headers=headers))
