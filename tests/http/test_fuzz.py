"""Fuzz the API against the committed OpenAPI document (openapi/openapi.json) with schemathesis.

Each operation gets generated requests (valid and invalid, schemathesis' coverage and fuzzing
phases) sent in-process, as an admin (as an approver to the approver-only operations). No answer
may be a 5xx, and an answer with a documented status and media type must match its schema.
Half the time the path and body name what the fixture seeded (model "fuzz", version 1), so the
handlers are reached, not only the 404s.

`MODEL_LEDGER_FUZZ_EXAMPLES` sets the fuzzed examples per operation (small by default, for CI):
    MODEL_LEDGER_FUZZ_EXAMPLES=500 uv run pytest tests/http/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.settings import Settings
from domain.events import EventMeta, Role
from domain.tokens import IssueToken
from tests.conftest import running
from tests.http.governance_helpers import create_model, record_compiled, register_version

EXAMPLES = int(os.environ.get("MODEL_LEDGER_FUZZ_EXAMPLES", "15"))
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
BASE_URL = "http://ledger.test"
CHECKS = [not_a_server_error, response_schema_conformance]
_REQUEST_ARGS = {"method", "url", "headers", "files", "data", "params", "cookies", "json"}


def _seeded(dictionary: str, *keys: str) -> dict[str, dict[str, object]]:
    return {key: {"dictionary": dictionary, "probability": 0.5} for key in keys}


schema = schemathesis.openapi.from_path(
    SCHEMA_PATH,
    config=schemathesis.Config.from_dict(
        {
            # the fixture's tokens authenticate; generated Authorization headers would not
            "generation": {"max-examples": EXAMPLES, "with-security-parameters": False},
            "dictionaries": {
                "model": {"values": ["fuzz"]},
                "version": {"values": [1]},
                "tier": {"values": ["low", "medium", "high"]},
                "environment": {"values": ["staging", "production"]},
            },
            "parameters": {
                **_seeded("model", "path.name"),
                **_seeded("version", "path.version", "body.version", "body.changes[*].version"),
                **_seeded("tier", "path.tier"),
                **_seeded("environment", "body.environment", "body.changes[*].environment"),
            },
        }
    ),
)

# Known failures (reported, not fixed here): these cases are exempt from the checks, and the
# xfail test at the bottom keeps them visible until the app is fixed.
AUDIT_PATHS = ("/v1/events", "/v1/audit/verify")


def _known_failure(case: schemathesis.Case, response: httpx.Response) -> bool:
    """OPTIONS on the audit controller's paths answers 500 (see the xfail test)."""
    return case.method == "OPTIONS" and case.path in AUDIT_PATHS and response.status_code == 500


@dataclass(frozen=True)
class Ledger:
    """The app, running on the portal's event loop, and tokens for the roles the fuzz uses."""

    portal: BlockingPortal
    client: httpx.AsyncClient
    tokens: dict[Role, dict[str, str]]

    def send(self, case: schemathesis.Case) -> httpx.Response:
        """Encode the case as schemathesis would (requests), deliver it in-process (httpx)."""
        role: Role = "approver" if "/approvals" in case.path else "admin"
        kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=self.tokens[role])
        prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in _REQUEST_ARGS})
        sent = prepared.prepare()
        body = sent.body.encode() if isinstance(sent.body, str) else sent.body
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.headers.items()]
        return self.request(
            sent.method or "GET", sent.url or BASE_URL, headers=headers, content=body
        )

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))


async def _token(resources: Resources, role: Role) -> dict[str, str]:
    issued = await tokens.issue(
        resources.store,
        resources.projector,
        resources.minter,
        IssueToken(subject=f"fuzz-{role}", role=role),
        meta=EventMeta(actor="test-setup", role="admin"),
    )
    return {"Authorization": f"Bearer {issued.token}"}


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[Role, dict]]]:
    async with running(create_app(settings)) as app:
        resources: Resources = app.state.resources
        roles: dict[Role, dict] = {r: await _token(resources, r) for r in ("admin", "approver")}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await create_model(client, roles["admin"], "fuzz")).status_code == 201
            registered = await register_version(client, roles["admin"], "fuzz")
            assert registered.status_code == 201, registered.text
            await record_compiled(resources, "fuzz", 1)
            yield client, roles


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    """Hypothesis tests are sync: the app's lifespan and its requests share a loop in a thread."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(_serve(settings)) as (client, roles),
    ):
        yield Ledger(portal, client, roles)


@schema.parametrize()
# one ledger per operation, shared by its examples on purpose: its state accumulates as in use
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_answers_within_its_schema(case: schemathesis.Case, ledger: Ledger) -> None:
    response = ledger.send(case)
    if not _known_failure(case, response):
        case.validate_response(response, checks=CHECKS)


@pytest.mark.xfail(
    strict=False,
    reason="AuditController's controller-level guard reads connection.user, which the bearer "
    "middleware never sets for OPTIONS (Litestar exempts OPTIONS from authentication): 500",
)
def test_options_on_the_audit_paths_is_no_server_error(ledger: Ledger) -> None:
    statuses = {
        (path, bool(headers)): ledger.request("OPTIONS", path, headers=headers).status_code
        for path in AUDIT_PATHS
        for headers in (ledger.tokens["admin"], {})
    }
    assert all(status < 500 for status in statuses.values()), statuses
