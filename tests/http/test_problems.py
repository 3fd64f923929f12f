"""Error answers are RFC 9457 problem details, exactly as the committed OpenAPI documents them.

Real failures (400, 401, 403, 404, 409, 413, 422; 503 in test_outages.py) are provoked; each must be
`application/problem+json`, documented for its operation under its status with the Problem
schema, and its body must validate against that schema (schemathesis' validator, as in the
fuzz). The Problem schema's members must be exactly those the code can emit.
"""

from __future__ import annotations

import ast
import gc
import json
import re
import warnings
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import msgspec
import schemathesis

from app.http.auth import PUBLIC_PATHS
from app.http.bodies import MAX_JSON_DEPTH
from app.http.problems import status_code_name
from app.http.schemas import Problem
from app.http_protocol import _PROBLEM as HEAD_TOO_LARGE
from app.main import create_app  # also loads every module defining a domain error
from app.resources import Resources
from app.settings import Settings
from domain import errors
from tests.conftest import TokenFactory, running
from tests.http.governance_helpers import create_model, lightgbm_model_bytes, register_version
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
        # every problem names its code, in one spelling (snake case, as `type` ends)
        {k: v for k, v in good.items() if k != "code"},
        {**good, "type": "urn:model-ledger:problem:not-found"},
    ]
    operation = SCHEMA["/v1/models/{name}"]["GET"]
    url = "http://ledger.test/v1/models/m"
    assert operation.is_valid_response(answer("GET", url, 404, json.dumps(good).encode()))
    for body in bad_bodies:
        refused = answer("GET", url, 404, json.dumps(body).encode())
        assert not operation.is_valid_response(refused), body


def _problem_of(answer: httpx.Response) -> Problem:
    """The body as a Problem (its patterns checked), whose `type` is the URN of its `code`."""
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    body = msgspec.json.decode(answer.content, type=Problem)
    assert body.type == f"urn:model-ledger:problem:{body.code}", body
    return body


async def test_every_problem_has_a_code_spelled_like_the_domain_codes(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    """Framework errors (a 405, a malformed body, an unknown route) were typed
    `bad-request`, `method-not-allowed` without a `code`, beside the domain's `not_found`."""
    ci = await auth("ci")
    answers = {
        "bad_request": await client.post("/v1/models", content=b"{", headers=ci),
        "method_not_allowed": await client.delete("/v1/models", headers=ci),
        "not_found": await client.get("/v1/nothing-here", headers=ci),
        "unauthorized": await client.get("/v1/models"),
        "forbidden": await client.post(
            "/v1/tokens", json={"subject": "x", "role": "ci"}, headers=ci
        ),
        "invalid_input": await client.post(
            "/v1/models", json={"name": "No!", "risk_tier": "low"}, headers=ci
        ),
    }
    assert (await create_model(client, ci, "m")).status_code == 201
    answers["conflict"] = await create_model(client, ci, "m")
    for code, answer in answers.items():
        assert _problem_of(answer).code == code, answer.text


def test_the_431_written_before_any_route_is_a_problem_like_the_others() -> None:
    answer = httpx.Response(431, headers={"content-type": PROBLEM}, content=HEAD_TOO_LARGE)
    assert _problem_of(answer).code == "request_header_fields_too_large"


def test_the_readme_lists_every_problem_code() -> None:
    """The API section's list of problem types names every code the server answers with."""
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, flags=re.MULTILINE))
    kinds: list[type[errors.DomainError]] = [errors.DomainError]
    codes = {"store_unavailable", "request_header_fields_too_large"}
    while kinds:
        kind = kinds.pop()
        kinds.extend(kind.__subclasses__())
        if kind is not errors.DomainError:
            codes.add(kind.code)
    codes |= {status_code_name(s) for s in (400, 401, 403, 404, 405, 413, 500, 503)}
    assert codes <= listed, f"problem codes missing from the README: {sorted(codes - listed)}"


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


# --- malformed input: 400, never 500 (issue 11) ----------------------------------------

NESTED = b"[" * 10_000 + b"]" * 10_000
MALFORMED_JSON = {
    "nested 10,000 levels": (NESTED, "deeper than 32 levels"),
    "nested inside a field": (b'{"name":"m","risk_tier":"low","tags":' + NESTED + b"}", "deeper"),
    "invalid UTF-8 in a string": (b'{"name":"\xff\xfe","risk_tier":"low"}', "not valid UTF-8"),
    "invalid UTF-8 in a key": (b'{"\xff":1}', "not valid UTF-8"),
}
JSON_ROUTES = [
    (method.upper(), template)
    for template, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if "application/json" in operation.get("requestBody", {}).get("content", {})
]


def _path(template: str) -> str:
    return template.replace("{name}", "m").replace("{version}", "1").replace("{tier}", "low")


async def test_malformed_json_bodies_are_400_on_every_json_route(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    admin, approver = await auth("admin"), await auth("approver")
    assert (await create_model(client, admin, "m")).status_code == 201
    assert (await register_version(client, admin, "m")).status_code == 201
    head = await resources.store.head()
    assert len(JSON_ROUTES) >= 12
    for method, template in JSON_ROUTES:
        headers = {**(approver if "/approvals" in template else admin)}
        headers["content-type"] = "application/json"
        for case, (body, says) in MALFORMED_JSON.items():
            answer = await client.request(method, _path(template), content=body, headers=headers)
            detail = documented_problem(answer, method, template, 400)["detail"]
            # the score route decodes into its schema at once: its own validation message
            assert says in detail or template.startswith("/v1/score"), (case, template, detail)
    assert await resources.store.head() == head


async def test_json_nested_up_to_the_limit_is_accepted(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "m")).status_code == 201
    assert (await register_version(client, ci, "m")).status_code == 201
    # the body's object, `params`, then lists: 2 + lists levels
    for lists, status in ((MAX_JSON_DEPTH - 2, 202), (MAX_JSON_DEPTH - 1, 400)):
        params = b'{"a":' + b"[" * lists + b"]" * lists + b"}"
        body = b'{"kind":"compile","model":"m","version":1,"params":' + params + b"}"
        headers = {**ci, "content-type": "application/json"}
        answer = await client.post("/v1/jobs", content=body, headers=headers)
        assert answer.status_code == status, answer.text


def _metadata_part(content: bytes, filename: str | None = None, content_type: str = "") -> Any:
    return (filename, content, content_type or "application/json")


async def test_malformed_multipart_metadata_is_400_and_leaves_no_file_open(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    assert (await create_model(client, ci, "m")).status_code == 201
    head = await resources.store.head()
    utf8 = b'{"format":"lightgbm","params":{"a":"\xff"}}'
    cases = {
        "a text part not UTF-8": (_metadata_part(utf8), "not valid utf-8 text"),
        "a text part in an unknown charset": (
            _metadata_part(b"{}", content_type="application/json; charset=nope"),
            "unknown charset",
        ),
        "a file part not UTF-8": (_metadata_part(utf8, "metadata.json"), "not valid UTF-8"),
        "nested 10,000 levels": (
            _metadata_part(b'{"format":"lightgbm","params":' + NESTED + b"}"),
            "deeper than 32 levels",
        ),
        "not JSON": (_metadata_part(b'{"format":'), "not valid JSON"),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for case, (metadata, says) in cases.items():
            # the artifact first: its file is open when the metadata part fails
            files = {"artifact": ("model.txt", lightgbm_model_bytes(), "text/plain")}
            files["metadata"] = metadata
            answer = await client.post("/v1/models/m/versions", files=files, headers=ci)
            detail = documented_problem(answer, "POST", "/v1/models/{name}/versions", 400)
            assert says in detail["detail"], (case, detail)
            del answer
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert await resources.store.head() == head


async def test_control_bytes_and_non_ascii_in_recorded_headers_are_400(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    head = await resources.store.head()
    for header in ("idempotency-key", "x-request-id", "x-correlation-id"):
        for value in (b"a\x00b", b"\xff\xfe", b"line\x1bescape"):
            answer = await client.post(
                "/v1/models", json={"name": "h", "risk_tier": "low"}, headers={**ci, header: value}
            )
            assert header in documented_problem(answer, "POST", "/v1/models", 400)["detail"]
    assert await resources.store.head() == head
    assert (await create_model(client, {**ci, "x-request-id": "req-1 ok"}, "h")).status_code == 201


async def test_invalid_utf8_and_nul_in_paths_and_query_strings_are_no_server_errors(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    admin = await auth("admin")
    assert (await create_model(client, admin, "m")).status_code == 201
    requests = [
        ("/v1/registry", "/v1/registry?as_of=%FF"),
        ("/v1/registry", "/v1/registry?model=%FF%FE"),
        ("/v1/registry", "/v1/registry?model=%00"),
        ("/v1/events", "/v1/events?type=%FF&stream=%ED%A0%80"),
        ("/v1/events", "/v1/events?stream=a%00b"),
        ("/v1/events", "/v1/events?%FF=1"),
        ("/v1/models/{name}", "/v1/models/%FF"),
        ("/v1/models/{name}", "/v1/models/a%00b"),
        ("/v1/models/{name}/history", "/v1/models/m/history?type=%00"),
    ]
    for template, url in requests:
        answer = await client.get(url, headers=admin)
        assert answer.status_code < 500, (url, answer.text)
        if answer.status_code >= 400:
            documented_problem(answer, "GET", template, answer.status_code)


async def test_a_nul_is_refused_whatever_content_type_the_body_claims(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    # Litestar parses a JSON route's body whatever its content type: the guard keyed on
    # "json" in the header let these through, and a NUL recorded fails its projections
    ci = await auth("ci")
    assert (await create_model(client, ci, "m")).status_code == 201
    head = await resources.store.head()
    body = b'{"name":"n","risk_tier":"low","tags":["a\\u0000b"]}'
    for content_type in ("text/plain", None, "Application/JSON", "application/x-json"):
        headers = {**ci, **({"content-type": content_type} if content_type else {})}
        answer = await client.post("/v1/models", content=body, headers=headers)
        assert "NUL" in documented_problem(answer, "POST", "/v1/models", 422)["detail"]
        patch = await client.patch("/v1/models/m", content=b'{"owner":"\\u0000"}', headers=headers)
        documented_problem(patch, "PATCH", "/v1/models/{name}", 422)
    assert await resources.store.head() == head
    # a backslash followed by "u0000" is no NUL: accepted
    text = b'{"name":"n","risk_tier":"low","description":"a\\\\u0000b"}'
    answer = await client.post(
        "/v1/models", content=text, headers={**ci, "content-type": "text/plain"}
    )
    assert answer.status_code == 201 and answer.json()["description"] == "a\\u0000b"
