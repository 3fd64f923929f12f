"""Error answers are RFC 9457 problem details, exactly as the committed OpenAPI documents them.

Real failures (400, 401, 403, 404, 409, 413, 422) are provoked; each must be
`application/problem+json`, documented for its operation under its status with the Problem
schema, and its body must validate against that schema (schemathesis' validator, as in the
fuzz). The Problem schema's members must be exactly those the code can emit.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import msgspec
import schemathesis

from app.http.auth import PUBLIC_PATHS
from app.http.schemas import Problem
from app.main import create_app  # also loads every module defining a domain error
from app.settings import Settings
from domain import errors
from tests.conftest import TokenFactory, running
from tests.http.governance_helpers import create_model, register_version
from tests.http.test_role_matrix import EVERYONE, READS, WRITES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "openapi" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
SCHEMA = schemathesis.openapi.from_path(SCHEMA_PATH)
PROBLEM = "application/problem+json"
PROBLEM_CONTENT = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# members `app.http.problems` sets itself; the rest come from domain errors' keywords
CORE = {"type", "title", "status", "detail"}
SET_BY_THE_MAPPING = {"code", "errors"}


def answer(method: str, url: str, status: int, content: bytes) -> httpx.Response:
    """A finished response as schemathesis reads it (a multipart request is not replayable)."""
    response = httpx.Response(status, headers={"content-type": PROBLEM}, content=content)
    response.request = httpx.Request(method, url)
    response.elapsed = timedelta(0)
    return response


def documented_problem(
    response: httpx.Response, method: str, template: str, status: int
) -> dict[str, Any]:
    """Assert `response` is a `status` problem documented for the operation; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    responses = DOCUMENT["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: {status} undocumented"
    assert responses[str(status)]["content"] == PROBLEM_CONTENT
    SCHEMA[template][method].validate_response(
        answer(method, str(response.request.url), status, response.content)
    )
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] == HTTPStatus(status).phrase
    return body


async def test_authentication_and_role_failures(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    for headers in ({}, {"Authorization": "Bearer mlt_nope_nope"}):
        refused = await client.get("/v1/models/m", headers=headers)
        documented_problem(refused, "GET", "/v1/models/{name}", 401)
        assert refused.headers["www-authenticate"] == "Bearer"
    ci = await auth("ci", "alice")
    wrong_role = await client.post("/v1/tokens", json={"subject": "x", "role": "ci"}, headers=ci)
    assert "admin" in documented_problem(wrong_role, "POST", "/v1/tokens", 403)["detail"]
    # a rule of the domain, not a role: an approver may not approve their own version
    assert (await create_model(client, ci, "m")).status_code == 201
    assert (await register_version(client, ci, "m")).status_code == 201
    own = await client.post(
        "/v1/models/m/versions/1/approvals",
        json={"decision": "approve"},
        headers=await auth("approver", "alice"),
    )
    body = documented_problem(own, "POST", "/v1/models/{name}/versions/{version}/approvals", 403)
    assert body["code"] == "four_eyes"


async def test_input_failures(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    ci = await auth("ci")
    not_a_tier = await client.post("/v1/models", json={"name": "m", "risk_tier": 3}, headers=ci)
    body = documented_problem(not_a_tier, "POST", "/v1/models", 400)
    assert body["errors"] and {e["key"] for e in body["errors"]} == {"risk_tier"}
    bad_name = await client.post("/v1/models", json={"name": "No!", "risk_tier": "low"}, headers=ci)
    body = documented_problem(bad_name, "POST", "/v1/models", 422)
    assert (body["code"], body["field"]) == ("invalid_input", "name")
    bad_instant = await client.get("/v1/registry", params={"as_of": "yesterday"}, headers=ci)
    assert documented_problem(bad_instant, "GET", "/v1/registry", 422)["field"] == "as_of"
    keyed = {**ci, "Idempotency-Key": "k1"}
    for name, status in (("a", 201), ("b", 422)):
        created = await create_model(client, keyed, name)
        assert created.status_code == status, created.text
    body = documented_problem(created, "POST", "/v1/models", 422)
    assert body["code"] == "idempotency_key_reused"


async def test_missing_things_and_conflicts(client: httpx.AsyncClient, auth: TokenFactory) -> None:
    ci = await auth("ci")
    missing = await client.get("/v1/models/nope/versions/1", headers=ci)
    body = documented_problem(missing, "GET", "/v1/models/{name}/versions/{version}", 404)
    assert body["code"] == "not_found"
    assert (await create_model(client, ci, "m")).status_code == 201
    again = await create_model(client, ci, "m")
    body = documented_problem(again, "POST", "/v1/models", 409)
    assert (body["code"], body["code_detail"]) == ("conflict", "model_exists")
    assert (await register_version(client, ci, "m")).status_code == 201
    promote = {"version": 1, "environment": "production"}
    blocked = await client.post("/v1/models/m/promotions", json=promote, headers=ci)
    body = documented_problem(blocked, "POST", "/v1/models/{name}/promotions", 409)
    assert {g["name"] for g in body["unmet_gates"]} >= {"compiled", "approvals"}
    stale = await client.post(
        "/v1/models/m/promotions", json=promote, headers={**ci, "If-Match": '"1"'}
    )
    body = documented_problem(stale, "POST", "/v1/models/{name}/promotions", 409)
    assert body["code"] == "concurrency_conflict"
    assert body["expected_version"] == 1 and body["actual_version"] > 1


async def test_size_limits(
    settings: Settings, client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci")
    wordy = {"name": "m", "risk_tier": "low", "description": "x" * settings.max_body_bytes}
    too_big = await client.post("/v1/models", json=wordy, headers=ci)
    documented_problem(too_big, "POST", "/v1/models", 413)
    # uploads have a limit of their own, on their own router
    small = msgspec.structs.replace(settings, max_upload_bytes=1000)
    async with running(create_app(small)) as limited:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
            csv = b"a,b\n" + b"1,2\n" * 1000
            upload = await http.post(
                "/v1/datasets", files={"file": ("d.csv", csv, "text/csv")}, headers=ci
            )
    documented_problem(upload, "POST", "/v1/datasets", 413)


def test_the_check_refuses_a_body_off_the_schema() -> None:
    """The validation above is not vacuous: a body the Problem schema forbids fails it."""
    good = {
        "type": "urn:model-ledger:problem:not_found",
        "title": "Not Found",
        "status": 404,
        "detail": "no model named 'm'",
        "code": "not_found",
    }
    bad_bodies = [
        {k: v for k, v in good.items() if k != "title"},
        {**good, "status": "404"},
        {**good, "type": "about:blank"},
        {**good, "unmet_gates": [{"name": "approvals"}]},
        {**good, "code": None},
    ]
    operation = SCHEMA["/v1/models/{name}"]["GET"]
    url = "http://ledger.test/v1/models/m"
    assert operation.is_valid_response(answer("GET", url, 404, json.dumps(good).encode()))
    for body in bad_bodies:
        refused = answer("GET", url, 404, json.dumps(body).encode())
        assert not operation.is_valid_response(refused), body


def test_every_error_is_documented_as_problem_details() -> None:
    """No operation documents an error in another shape (e.g. Litestar's JSON 400)."""
    for template, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == PROBLEM_CONTENT, (method, template, status)
            public = any(re.search(p, template) for p in PUBLIC_PATHS)
            assert ("401" in operation["responses"]) != public, (method, template)


def test_403_names_the_roles_the_role_matrix_allows() -> None:
    for (method, template), entry in {**WRITES, **READS}.items():
        path = re.sub(r":\w+}", "}", template)
        responses = DOCUMENT["paths"][path][method.lower()]["responses"]
        if entry.roles == EVERYONE:
            assert "403" not in responses, (method, path)
        else:
            roles = ", ".join(sorted(entry.roles))
            assert responses["403"]["description"].endswith(f"(roles allowed: {roles})")


def _error_classes() -> set[str]:
    found: set[str] = set()
    pending: list[type[errors.DomainError]] = [errors.DomainError]
    while pending:
        kind = pending.pop()
        found.add(kind.__name__)
        pending.extend(kind.__subclasses__())
    return found


def _error_keywords() -> set[str]:
    """Every keyword passed to a domain error's constructor in our code."""
    kinds = _error_classes()
    keywords: set[str] = set()
    for package in ("domain", "app", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in kinds:
                    keywords |= {k.arg for k in node.keywords if k.arg is not None}
    return keywords


def test_the_problem_schema_has_exactly_the_members_the_code_emits() -> None:
    emitted = _error_keywords()
    assert {"field", "unmet_gates"} <= emitted  # the scan does find keywords
    documented = set(Problem.__struct_fields__)
    assert documented - CORE == emitted | SET_BY_THE_MAPPING, (
        f"emitted but undocumented: {sorted(emitted - documented)}; "
        f"documented but never emitted: {sorted(documented - CORE - emitted - SET_BY_THE_MAPPING)}"
    )
