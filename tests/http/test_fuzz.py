"""Fuzz the API against the committed OpenAPI document (openapi/openapi.json) with schemathesis.

Every operation gets generated requests (valid and invalid) sent as an admin; none may answer
5xx, and every answer with a documented status must match the document. The path parameters are
sometimes those of a seeded model ("fuzz", version 1), so handlers are reached, not only 404s.

`MODEL_LEDGER_FUZZ_EXAMPLES` sets the examples per operation (small by default, for CI);
a long run: `MODEL_LEDGER_FUZZ_EXAMPLES=500 uv run pytest tests/http/test_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import running
from tests.http.governance_helpers import create_model, register_version

EXAMPLES = int(os.environ.get("MODEL_LEDGER_FUZZ_EXAMPLES", "15"))
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
BASE_URL = "http://ledger.test"
CHECKS = [not_a_server_error, response_schema_conformance]
_REQUEST_KEYS = {"method", "url", "headers", "files", "data", "params", "cookies", "json"}

schema = schemathesis.openapi.from_path(
    SCHEMA_PATH,
    config=schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": EXAMPLES, "with-security-parameters": False},
            # half the time, path parameters name what the fixture seeded
            "dictionaries": {
                "model": {"values": ["fuzz"]},
                "version": {"values": [1]},
                "tier": {"values": ["low", "medium", "high"]},
            },
            "parameters": {
                "path.name": {"dictionary": "model", "probability": 0.5},
                "path.version": {"dictionary": "version", "probability": 0.5},
                "path.tier": {"dictionary": "tier", "probability": 0.5},
            },
        }
    ),
)


@dataclass(frozen=True)
class Ledger:
    """The app, running on the portal's event loop, and an admin's headers."""

    portal: BlockingPortal
    client: httpx.AsyncClient
    headers: dict[str, str]

    def send(self, case: schemathesis.Case) -> httpx.Response:
        """Encode the case as schemathesis would (requests), deliver it in-process (httpx)."""
        kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=self.headers)
        prepared = requests.Request(
            **{k: v for k, v in kwargs.items() if k in _REQUEST_KEYS}
        ).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in prepared.headers.items()]
        return self.portal.call(
            lambda: self.client.request(
                prepared.method or "GET", prepared.url or BASE_URL, headers=headers, content=body
            )
        )


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with running(create_app(settings)) as app:
        resources: Resources = app.state.resources
        issued = await tokens.issue(
            resources.store,
            resources.projector,
            resources.minter,
            IssueToken(subject=f"fuzz-{uuid.uuid4().hex[:6]}", role="admin"),
            meta=EventMeta(actor="test-setup", role="admin"),
        )
        admin = {"Authorization": f"Bearer {issued.token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await create_model(client, admin, "fuzz")).status_code == 201
            registered = await register_version(client, admin, "fuzz")
            assert registered.status_code == 201, registered.text
            yield client, admin


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    """The app's lifespan and requests share one loop, in a thread: hypothesis tests are sync."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(_serve(settings)) as (client, admin),
    ):
        yield Ledger(portal, client, admin)


@schema.parametrize()
# one ledger per operation, shared by its examples on purpose: state accumulates as in use
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_answers_within_its_schema(case: schemathesis.Case, ledger: Ledger) -> None:
    case.validate_response(ledger.send(case), checks=CHECKS)
