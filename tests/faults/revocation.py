"""The revocation window across processes: a token issued and revoked on a real `serve`,
used against a real `model-ledger scorer` scoring a model the worker compiled. How long
the scorer still admits a revoked token is measured from before the revoking request."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import httpx

from tests.faults import story
from tests.faults.integrity import QUIET_SIGNER
from tests.faults.stack import Stack

ROW = {"rows": [[0.5, 40.0, 13.0, 2.0]]}


@dataclass(frozen=True)
class RevocationOutcome:
    """Seconds until the scorer admitted each new token and refused each revoked one."""

    issued: tuple[float, ...]
    revoked: tuple[float, ...]
    scored: int  # requests the scorer scored with the trials' tokens

    @property
    def trials(self) -> int:
        return len(self.revoked)

    @property
    def revoked_p50(self) -> float:
        return statistics.median(self.revoked)

    @property
    def revoked_max(self) -> float:
        return max(self.revoked)

    @property
    def issued_max(self) -> float:
        return max(self.issued)


async def _status(client: httpx.AsyncClient, path: str, token: str) -> int:
    answer = await client.post(path, json=ROW, headers=story.bearer(token))
    return answer.status_code


async def _until(
    client: httpx.AsyncClient,
    path: str,
    token: str,
    status: int,
    since: float,
    meanwhile: tuple[int, ...] = (200, 401),
) -> tuple[float, int]:
    """Seconds from `since` until `path` answers `status` for `token` (deadline 30 s), and
    how many 200s were answered on the way (answers other than `meanwhile` fail)."""
    scored = 0
    while (answer := await _status(client, path, token)) != status:
        assert answer in meanwhile, answer
        scored += answer == 200
        assert time.perf_counter() - since < 30, f"no {status} after 30 s"
    return time.perf_counter() - since, scored + (status == 200)


async def deployed_model(client: httpx.AsyncClient) -> str:
    """A model compiled by the worker, approved and promoted to production."""
    cast = await story.cast(client, "scored", 1)
    name = cast.models[0]
    number = await story.register_version(client, cast.ci, name, 0)
    await story.until_compiled(client, [(name, number)])
    await story.approve(client, cast.approvers[0], name, number, "approve")
    await story.promote(client, cast.ci, name, number, "production")
    return name


async def revocation_window(stack: Stack, trials: int = 5) -> RevocationOutcome:
    """`trials` scorer tokens, each issued on the API, scored with on the scorer, revoked
    on the API (DELETE /v1/tokens/{id}) and probed on the scorer until refused."""
    api = stack.start("serve", "--worker", "--port", "0", **QUIET_SIGNER)
    api_url = api.listening()
    scorer = stack.start("scorer", "--port", "0", MODEL_LEDGER_SCORER_INSTANCE="faults")
    admin = stack.admin_headers()
    async with httpx.AsyncClient(base_url=api_url, headers=admin, timeout=60) as client:
        name = await deployed_model(client)
        path = f"/v1/score/{name}"
        async with httpx.AsyncClient(base_url=scorer.listening(), timeout=30) as remote:
            # the scorer follows the deployment from the log: no route (404) until it has
            admin_token = admin["Authorization"].removeprefix("Bearer ")
            await _until(remote, path, admin_token, 200, time.perf_counter(), (401, 404))
            issued, revoked, scored = [], [], 0
            for trial in range(trials):
                began = time.perf_counter()
                token, token_id = await story.issue_token(client, f"app-{trial}", "scorer")
                window, count = await _until(remote, path, token, 200, began)
                issued.append(window)
                began = time.perf_counter()
                answer = await client.delete(f"/v1/tokens/{token_id}")
                assert answer.status_code == 200, answer.text
                assert await _status(client, path, token) == 401  # at once where revoked
                window, more = await _until(remote, path, token, 401, began)
                revoked.append(window)
                scored += count + more
    return RevocationOutcome(issued=tuple(issued), revoked=tuple(revoked), scored=scored)
