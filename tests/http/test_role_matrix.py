"""The role-by-endpoint matrix, walked from the app's own routes (the console's too).

Every write route (POST/PUT/PATCH/DELETE) and every authenticated read route of the app must
have an entry here saying which roles may call it: a route added without one fails
`test_every_route_is_in_the_matrix`. A role outside an entry's set gets a 403 problem and
appends nothing; a role inside it is never refused (not 401/403, never a 500).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute

from app.main import create_app
from app.resources import Resources
from app.settings import Settings
from tests.conftest import TokenFactory
from tests.http.governance_helpers import (
    create_model,
    lightgbm_model_bytes,
    record_compiled,
    record_compliance,
    register_version,
)
from tests.scoring.helpers import built, record_library

PROBLEM = "application/problem+json"
ROLES = ("admin", "ci", "approver", "auditor", "scorer")
EVERYONE = frozenset(ROLES)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# routes anyone may call (API.md "Operations"); every other GET needs a token
PUBLIC = re.compile(r"^/(health|ready|metrics)$|^/schema(/|$)")
# a compliance report the setup stores and records for version 1, for the report route
REPORT = b'{"passed":true,"features":{}}'
REPORT_SHA256 = hashlib.sha256(REPORT).hexdigest()
# the console signs in with a session, not a bearer token: its routes have a matrix of their own
CONSOLE_PATHS = re.compile(r"^/ui(/|$)")
# a prediction the setup logs, for the feedback route
PREDICTION_ID = "0190a0a0-0000-7000-8000-00000000a11e"


def _version_upload() -> dict[str, Any]:
    meta = {"format": "lightgbm", "metrics": {"auc": 0.9}, "lineage": {"git_commit": "m1"}}
    return {
        "artifact": ("model.txt", io.BytesIO(lightgbm_model_bytes(3)), "text/plain"),
        "metadata": (None, json.dumps(meta), "application/json"),
    }


def _dataset_upload() -> dict[str, Any]:
    """A dataset recorded as a version of the named dataset "matrix-data"."""
    return {
        "file": ("data.csv", io.BytesIO(b"amount,age\n1.5,30\n2.5,41\n"), "text/csv"),
        "name": (None, "matrix-data"),
    }


@dataclass(frozen=True)
class Call:
    """A concrete request to a route: a URL with its path parameters filled, and a body."""

    url: str
    body: Any = None
    # multipart parts, built afresh for every request (file objects are consumed)
    files: Callable[[], dict[str, Any]] | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    async def send(
        self, client: httpx.AsyncClient, method: str, headers: dict[str, str], **ids: str
    ) -> httpx.Response:
        return await client.request(
            method,
            self.url.format(**ids),
            json=self.body,
            files=self.files() if self.files else None,
            params=dict(self.params),
            headers=headers,
        )


@dataclass(frozen=True)
class Entry:
    roles: frozenset[str]
    call: Call


def allow(*roles: str) -> frozenset[str]:
    assert set(roles) <= EVERYONE
    return frozenset(roles)


# Write routes, in the order the matrix test calls them (allowed roles' calls change state).
# The model "m" has versions 1-3 compiled, and version 1 is champion in staging.
WRITES: dict[tuple[str, str], Entry] = {
    ("POST", "/v1/tokens"): Entry(
        allow("admin"), Call("/v1/tokens", {"subject": "matrix-svc", "role": "scorer"})
    ),
    # a token the setup issued for this (`{token}`)
    ("DELETE", "/v1/tokens/{token_id:str}"): Entry(
        allow("admin"), Call("/v1/tokens/{token}", params={"reason": "matrix"})
    ),
    ("POST", "/v1/models"): Entry(
        allow("admin", "ci"), Call("/v1/models", {"name": "m2", "risk_tier": "low"})
    ),
    ("PATCH", "/v1/models/{name:str}"): Entry(
        allow("admin", "ci"), Call("/v1/models/m", {"description": "patched"})
    ),
    ("POST", "/v1/models/{name:str}/versions"): Entry(
        allow("admin", "ci"), Call("/v1/models/m/versions", files=_version_upload)
    ),
    ("POST", "/v1/models/{name:str}/versions/{version:int}/approvals"): Entry(
        allow("approver"),
        Call("/v1/models/m/versions/1/approvals", {"decision": "approve", "comment": "ok"}),
    ),
    ("POST", "/v1/models/{name:str}/versions/{version:int}/approvals/revocation"): Entry(
        allow("approver"),
        Call("/v1/models/m/versions/1/approvals/revocation", {"reason": "second thoughts"}),
    ),
    ("POST", "/v1/models/{name:str}/promotions"): Entry(
        allow("admin", "ci"),
        Call("/v1/models/m/promotions", {"version": 2, "environment": "staging"}),
    ),
    ("POST", "/v1/models/{name:str}/deployment-changes"): Entry(
        allow("admin", "ci"),
        Call(
            "/v1/models/m/deployment-changes", {"changes": [{"version": 2, "environment": "dev"}]}
        ),
    ),
    ("POST", "/v1/models/{name:str}/rollbacks"): Entry(
        allow("admin", "ci"),
        Call("/v1/models/m/rollbacks", {"environment": "staging", "reason": "matrix"}),
    ),
    # staging: version 1 champion again after the rollback; the second allowed role gets a 409
    ("POST", "/v1/models/{name:str}/experiments"): Entry(
        allow("admin", "ci"),
        Call(
            "/v1/models/m/experiments",
            {
                "environment": "staging",
                "champion": 1,
                "challenger": 2,
                "traffic_percent": 50,
                "metric": {"name": "conversion"},
                "minimum_detectable_effect": 0.05,
            },
        ),
    ),
    ("POST", "/v1/models/{name:str}/drift-alerts"): Entry(
        allow("admin", "ci"),
        Call(
            "/v1/models/m/drift-alerts",
            {"version": 1, "statistic": "psi", "value": 0.1, "threshold": 0.2, "severity": "info"},
        ),
    ),
    ("POST", "/v1/models/{name:str}/versions/{version:int}/retirement"): Entry(
        allow("admin", "ci"), Call("/v1/models/m/versions/3/retirement", {"reason": "old"})
    ),
    ("POST", "/v1/datasets"): Entry(
        allow("admin", "ci"), Call("/v1/datasets", files=_dataset_upload)
    ),
    ("PUT", "/v1/models/{name:str}/retraining-policy"): Entry(
        allow("admin", "ci"),
        Call("/v1/models/m/retraining-policy", {"dataset": "matrix-data", "target": "age"}),
    ),
    ("PUT", "/v1/policies/{tier:str}"): Entry(
        allow("admin"), Call("/v1/policies/low", {"required_approvals": 1})
    ),
    ("POST", "/v1/jobs"): Entry(
        allow("admin", "ci"), Call("/v1/jobs", {"kind": "compile", "model": "m", "version": 1})
    ),
    ("POST", "/v1/score/{name:str}"): Entry(
        allow("scorer", "admin"),
        Call("/v1/score/m", {"rows": [[0.5, 1.0, -1.0, None]]}, params={"environment": "qa"}),
    ),
    ("POST", "/v1/feedback"): Entry(
        allow("scorer", "admin"),
        Call("/v1/feedback", {"prediction_id": PREDICTION_ID, "reward": 1}),
    ),
}

READS: dict[tuple[str, str], Entry] = {
    ("GET", "/v1/tokens"): Entry(allow("admin"), Call("/v1/tokens")),
    ("GET", "/v1/events"): Entry(allow("auditor", "admin"), Call("/v1/events")),
    ("GET", "/v1/audit/verify"): Entry(allow("auditor", "admin"), Call("/v1/audit/verify")),
    ("GET", "/v1/models"): Entry(EVERYONE, Call("/v1/models")),
    ("GET", "/v1/models/{name:str}"): Entry(EVERYONE, Call("/v1/models/m")),
    ("GET", "/v1/models/{name:str}/versions"): Entry(EVERYONE, Call("/v1/models/m/versions")),
    ("GET", "/v1/models/{name:str}/versions/{version:int}"): Entry(
        EVERYONE, Call("/v1/models/m/versions/1")
    ),
    ("GET", "/v1/models/{name:str}/history"): Entry(
        allow("auditor", "admin"), Call("/v1/models/m/history")
    ),
    ("GET", "/v1/models/{name:str}/versions/{version:int}/dossier"): Entry(
        allow("auditor", "admin"), Call("/v1/models/m/versions/1/dossier")
    ),
    ("GET", "/v1/models/{name:str}/versions/{version:int}/reports/{sha256:str}"): Entry(
        allow("admin", "ci", "approver", "auditor"),
        Call(f"/v1/models/m/versions/1/reports/{REPORT_SHA256}"),
    ),
    ("GET", "/v1/registry"): Entry(EVERYONE, Call("/v1/registry")),
    ("GET", "/v1/registry/diff"): Entry(EVERYONE, Call("/v1/registry/diff", params={"from": "0"})),
    ("GET", "/v1/policies"): Entry(EVERYONE, Call("/v1/policies")),
    ("GET", "/v1/policies/{tier:str}"): Entry(EVERYONE, Call("/v1/policies/low")),
    ("GET", "/v1/jobs/{job_id:str}"): Entry(EVERYONE, Call("/v1/jobs/{job}")),
    ("GET", "/v1/models/{name:str}/experiments"): Entry(EVERYONE, Call("/v1/models/m/experiments")),
    ("GET", "/v1/models/{name:str}/retraining-policy"): Entry(
        EVERYONE, Call("/v1/models/m/retraining-policy")
    ),
    # the named dataset the setup uploads
    ("GET", "/v1/datasets"): Entry(EVERYONE, Call("/v1/datasets")),
    ("GET", "/v1/datasets/{name:str}"): Entry(EVERYONE, Call("/v1/datasets/matrix-data")),
    # an experiment the read test starts (`{experiment}`)
    ("GET", "/v1/models/{name:str}/experiments/{experiment_id:str}"): Entry(
        EVERYONE, Call("/v1/models/m/experiments/{experiment}")
    ),
}


# The console's routes, each with the API route whose roles it must admit exactly (None: any
# signed-in role). A role outside gets a 403 page and appends nothing; without a session, the
# sign-in page (303). The model "m" is _setup's.
CONSOLE: dict[tuple[str, str], tuple[Entry, tuple[str, str] | None]] = {
    ("GET", "/ui"): (Entry(EVERYONE, Call("/ui")), ("GET", "/v1/models")),
    ("GET", "/ui/models/{name:str}"): (
        Entry(EVERYONE, Call("/ui/models/m")),
        ("GET", "/v1/models/{name:str}"),
    ),
    # what a model's predictions scored: no API route reads the prediction log; every
    # signed-in role sees the model and its deployments, and so these aggregates
    ("GET", "/ui/models/{name:str}/scores"): (
        Entry(EVERYONE, Call("/ui/models/m/scores")),
        ("GET", "/v1/models/{name:str}"),
    ),
    ("GET", "/ui/models/{name:str}/timeline"): (
        Entry(allow("auditor", "admin"), Call("/ui/models/m/timeline")),
        ("GET", "/v1/models/{name:str}/history"),
    ),
    ("GET", "/ui/models/{name:str}/versions/{version:int}"): (
        Entry(EVERYONE, Call("/ui/models/m/versions/1")),
        ("GET", "/v1/models/{name:str}/versions/{version:int}"),
    ),
    ("POST", "/ui/models/{name:str}/versions/{version:int}/approvals"): (
        Entry(
            allow("approver"),
            Call("/ui/models/m/versions/1/approvals", {"decision": "approve", "comment": "ok"}),
        ),
        ("POST", "/v1/models/{name:str}/versions/{version:int}/approvals"),
    ),
    ("GET", "/ui/models/{name:str}/versions/{version:int}/plan"): (
        Entry(allow("admin", "ci"), Call("/ui/models/m/versions/2/plan")),
        ("POST", "/v1/models/{name:str}/promotions"),
    ),
    ("GET", "/ui/models/{name:str}/versions/{version:int}/dossier"): (
        Entry(allow("auditor", "admin"), Call("/ui/models/m/versions/1/dossier")),
        ("GET", "/v1/models/{name:str}/versions/{version:int}/dossier"),
    ),
    ("GET", "/ui/models/{name:str}/versions/{version:int}/dossier.md"): (
        Entry(allow("auditor", "admin"), Call("/ui/models/m/versions/1/dossier.md")),
        ("GET", "/v1/models/{name:str}/versions/{version:int}/dossier"),
    ),
    ("GET", "/ui/registry"): (Entry(EVERYONE, Call("/ui/registry")), ("GET", "/v1/registry")),
    ("GET", "/ui/registry/diff"): (
        Entry(EVERYONE, Call("/ui/registry/diff", params={"from": "0"})),
        ("GET", "/v1/registry/diff"),
    ),
    ("GET", "/ui/verify"): (
        Entry(allow("auditor", "admin"), Call("/ui/verify")),
        ("GET", "/v1/audit/verify"),
    ),
    # last: it ends the session
    ("POST", "/ui/sign-out"): (Entry(EVERYONE, Call("/ui/sign-out", {})), None),
}
# the console's routes open without a session
CONSOLE_OPEN = {
    ("GET", "/ui/sign-in"),
    ("POST", "/ui/sign-in"),
    ("GET", "/ui/static/{file_path:path}"),
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def console_routes(app: Litestar) -> set[tuple[str, str]]:
    """The console's GET and write routes, as (method, path template)."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute) and CONSOLE_PATHS.search(route.path):
            for handler in route.route_handlers:
                found |= {(str(m), route.path) for m in handler.http_methods}
    return {key for key in found if key[0] in WRITE_METHODS or key[0] == "GET"}


def app_routes(app: Litestar) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(write routes, authenticated read routes) of the API, as (method, path template)."""
    writes: set[tuple[str, str]] = set()
    reads: set[tuple[str, str]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or CONSOLE_PATHS.search(route.path):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                key = (str(method), route.path)
                if method in WRITE_METHODS:
                    writes.add(key)
                elif method == "GET":
                    if not PUBLIC.search(route.path):
                        reads.add(key)
                else:
                    assert method in {"OPTIONS", "HEAD"}, f"unclassified route {key}"
    return writes, reads


def problem_of(response: httpx.Response, status: int) -> str | None:
    """Why `response` is not a `status` problem-details response (None when it is)."""
    if response.status_code != status:
        return f"status {response.status_code} (wanted {status}): {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith(PROBLEM):
        return f"content-type {response.headers.get('content-type')!r}, not {PROBLEM}"
    body = response.json()
    if body.get("status") != status or not body.get("title") or not body.get("detail"):
        return f"not problem details: {body}"
    return None


def test_every_route_is_in_the_matrix() -> None:
    # building the app does no I/O, so this needs no database
    writes, reads = app_routes(create_app(Settings()))
    assert writes == set(WRITES), (
        f"write routes without a matrix entry: {sorted(writes - set(WRITES))}; "
        f"matrix entries without a route: {sorted(set(WRITES) - writes)}"
    )
    assert reads == set(READS), (
        f"read routes without a matrix entry: {sorted(reads - set(READS))}; "
        f"matrix entries without a route: {sorted(set(READS) - reads)}"
    )
    console = console_routes(create_app(Settings()))
    assert console == set(CONSOLE) | CONSOLE_OPEN, (
        f"console routes without a matrix entry: {sorted(console - set(CONSOLE) - CONSOLE_OPEN)}"
    )


def test_console_routes_admit_exactly_the_roles_of_their_api_routes() -> None:
    api = {**WRITES, **READS}
    for key, (entry, mirrored) in CONSOLE.items():
        if mirrored is not None:
            assert entry.roles == api[mirrored].roles, (key, mirrored)


async def _setup(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> dict[str, dict[str, str]]:
    """One token per role (distinct subjects), and the model "m" with compiled versions."""
    tokens = {role: await auth(role, f"{role}-matrix") for role in ROLES}
    setup = await auth("ci", "setup-pipeline")
    assert (await create_model(client, setup, "m")).status_code == 201
    for seed in (0, 1, 2):
        created = await register_version(client, setup, "m", seed=seed)
        assert created.status_code == 201, created.text
        await record_compiled(resources, "m", created.json()["version"])
    staged = await client.post(
        "/v1/models/m/promotions", json={"version": 1, "environment": "staging"}, headers=setup
    )
    assert staged.status_code == 201, staged.text
    assert (await resources.artifacts.put_bytes(REPORT)).sha256 == REPORT_SHA256
    await record_compliance(resources, "m", 1, passed=True, report_sha256=REPORT_SHA256)
    # scoring: version 1's real library in "qa", which no write of the matrix changes
    await record_library(resources, "m", 1, built("seed0"))
    qa = await client.post(
        "/v1/models/m/promotions", json={"version": 1, "environment": "qa"}, headers=setup
    )
    assert qa.status_code == 201, qa.text
    await resources.scoring.scorer.refresh()
    named = await client.post("/v1/datasets", files=_dataset_upload(), headers=setup)
    assert named.status_code == 201, named.text
    await resources.pool.execute(
        "INSERT INTO predictions (prediction_id, name, environment, version, library_sha256, "
        "arm, score, created_at) VALUES ($1, 'm', 'qa', 1, 'lib', 'champion', '0.5', now())",
        uuid.UUID(PREDICTION_ID),
    )
    return tokens


async def test_write_endpoints_refuse_every_other_role_and_append_nothing(
    app: Litestar, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    tokens = await _setup(client, auth, resources)
    await auth("scorer", "matrix-revocable")
    token = await resources.pool.fetchval(
        "SELECT token_id FROM tokens WHERE subject = 'matrix-revocable'"
    )
    writes, _ = app_routes(app)
    missing = writes - set(WRITES)
    assert not missing, f"write routes without a matrix entry: {sorted(missing)}"

    failures: list[str] = []
    for (method, template), entry in WRITES.items():
        if (method, template) not in writes:
            failures.append(f"{method} {template}: in the matrix but not a route of the app")
            continue
        refused = [(None, {}), ("bad token", {"Authorization": "Bearer mlt_nope_nope"})]
        refused += [(role, tokens[role]) for role in ROLES if role not in entry.roles]
        for role, headers in refused:
            head, _ = await resources.store.head()
            response = await entry.call.send(client, method, headers, token=token)
            status = 403 if role in ROLES else 401
            if why := problem_of(response, status):
                failures.append(f"{method} {template} as {role or 'anonymous'}: {why}")
            if (await resources.store.head())[0] != head:
                failures.append(f"{method} {template} as {role or 'anonymous'}: appended events")
        statuses = {}
        for role in sorted(entry.roles, key=ROLES.index):
            response = await entry.call.send(client, method, tokens[role], token=token)
            statuses[role] = response.status_code
            if response.status_code in (401, 403) or response.status_code >= 500:
                failures.append(
                    f"{method} {template} as allowed {role}: {response.status_code} "
                    f"{response.text[:200]}"
                )
        # the body is valid: some allowed role really did it (so the refusals above refused
        # a request that would otherwise have succeeded)
        if not any(200 <= s < 300 for s in statuses.values()):
            failures.append(f"{method} {template}: no allowed role succeeded: {statuses}")
    assert not failures, "\n".join(failures)


async def test_read_endpoints_need_a_token_and_the_right_role(
    app: Litestar, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    tokens = await _setup(client, auth, resources)
    _, reads = app_routes(app)
    missing = reads - set(READS)
    assert not missing, f"read routes without a matrix entry: {sorted(missing)}"
    # a real id: the compile job the setup's first version requested
    job = await resources.pool.fetchval("SELECT job_id FROM jobs ORDER BY requested_position")
    experiment = await _an_experiment(client, tokens["ci"])

    failures: list[str] = []
    for (method, template), entry in READS.items():
        for anonymous in ({}, {"Authorization": "Bearer mlt_nope_nope"}):
            response = await entry.call.send(
                client, method, anonymous, job=job, experiment=experiment
            )
            if why := problem_of(response, 401):
                failures.append(f"{method} {template} with {anonymous or 'no token'}: {why}")
            elif response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{method} {template}: 401 without WWW-Authenticate: Bearer")
        for role in ROLES:
            response = await entry.call.send(
                client, method, tokens[role], job=job, experiment=experiment
            )
            if role in entry.roles:
                if response.status_code != 200:
                    failures.append(
                        f"{method} {template} as allowed {role}: {response.status_code} "
                        f"{response.text[:200]}"
                    )
            elif why := problem_of(response, 403):
                failures.append(f"{method} {template} as {role}: {why}")
    assert not failures, "\n".join(failures)


async def _an_experiment(client: httpx.AsyncClient, ci: dict[str, str]) -> str:
    """An experiment of 2 against champion 1 in staging; its id."""
    body = WRITES[("POST", "/v1/models/{name:str}/experiments")].call.body
    started = await client.post("/v1/models/m/experiments", json=body, headers=ci)
    assert started.status_code == 201, started.text
    experiment_id: str = started.json()["experiment_id"]
    return experiment_id


async def test_operations_routes_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/ready", "/metrics", "/schema/openapi.json"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])


async def _signed_in(app: Litestar, headers: dict[str, str]) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client with a console session for the token in `headers`, and the
    session's CSRF token."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger.test")
    form = await http.get("/ui/sign-in")
    token = headers["Authorization"].removeprefix("Bearer ")
    csrf = _CSRF.search(form.text)
    assert csrf, form.text[:200]
    signed = await http.post("/ui/sign-in", data={"csrf_token": csrf.group(1), "token": token})
    assert signed.status_code == 303, signed.text[:200]
    home = _CSRF.search((await http.get("/ui")).text)
    assert home
    return http, home.group(1)


async def _console_call(
    http: httpx.AsyncClient, method: str, entry: Entry, csrf: str
) -> httpx.Response:
    if method == "GET":
        return await http.get(entry.call.url, params=dict(entry.call.params))
    return await http.post(entry.call.url, data={**(entry.call.body or {}), "csrf_token": csrf})


async def test_console_routes_refuse_every_other_role_and_the_signed_out(
    app: Litestar, client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    tokens = await _setup(client, auth, resources)
    failures: list[str] = []
    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ledger.test"
    )
    async with anonymous:
        for (method, template), (entry, _) in CONSOLE.items():
            head, _ = await resources.store.head()
            response = await _console_call(anonymous, method, entry, "")
            if response.status_code != 303 or not response.headers["location"].startswith(
                "/ui/sign-in"
            ):
                failures.append(f"{method} {template} signed out: {response.status_code}")
            if (await resources.store.head())[0] != head:
                failures.append(f"{method} {template} signed out: appended events")
    for role in ROLES:
        http, csrf = await _signed_in(app, tokens[role])
        try:
            for (method, template), (entry, _) in CONSOLE.items():
                head, _ = await resources.store.head()
                response = await _console_call(http, method, entry, csrf)
                status = response.status_code
                if role in entry.roles:
                    wanted = 200 if method == "GET" else 303
                    if status != wanted:
                        failures.append(f"{method} {template} as allowed {role}: {status}")
                elif status != 403 or "<h1>Not allowed</h1>" not in response.text:
                    failures.append(f"{method} {template} as {role}: {status}, not a 403 page")
                elif (await resources.store.head())[0] != head:
                    failures.append(f"{method} {template} as {role}: appended events")
        finally:
            await http.aclose()
    assert not failures, "\n".join(failures)
