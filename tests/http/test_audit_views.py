"""What an auditor sees: upload limits, datasets, dossiers, the registry as of any instant and
its diffs, a model's history, projections rebuilt from the log, and one model's export."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from click.testing import CliRunner, Result

from app.cli import main
from app.main import create_app
from app.resources import Resources
from app.services import tokens
from app.services.export import verify_file
from app.settings import Settings
from domain.events import EventMeta
from domain.tokens import IssueToken
from tests.conftest import TokenFactory, running
from tests.http.governance_helpers import (
    create_model,
    lightgbm_model_bytes,
    record_compiled,
    record_compliance,
    register_version,
)

PROBLEM = "application/problem+json"
APPROVERS = ("risk-officer-1", "risk-officer-2")
# the views the governance projection keeps (the projections may declare more)
GOVERNANCE_TABLES = (
    "model_states",
    "versions",
    "deployments",
    "deployment_history",
    "approvals",
    "drift_alerts",
    "policies",
)
EVENT_FIELDS = {"position", "stream", "version", "type", "data", "meta", "recorded_at", "hash"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# ---------------------------------------------------------------------------------------------
# a governance flow shared by the audit tests


class Flow(msgspec.Struct, kw_only=True):
    ci: dict[str, str]
    admin: dict[str, str]
    auditor: dict[str, str]
    # GET /v1/registry captured after each step, by step name
    captured: dict[str, dict[str, Any]]


async def governance_flow(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, *, capture: bool = False
) -> Flow:
    """Model "m" (high risk): v1 certified, approved twice and promoted to production; v2
    promoted in staging over v1 and rolled back; a drift alert; the high tier's policy changed.
    """
    ci, admin = await auth("ci", "pipeline"), await auth("admin", "root")
    auditor = await auth("auditor", "internal-audit")
    approvers = [await auth("approver", name) for name in APPROVERS]
    flow = Flow(ci=ci, admin=admin, auditor=auditor, captured={})

    async def step(name: str, response: httpx.Response | None = None, status: int = 201) -> None:
        if response is not None:
            assert response.status_code == status, f"{name}: {response.text}"
        if capture:
            current = await client.get("/v1/registry", headers=ci)
            assert current.status_code == 200, current.text
            flow.captured[name] = current.json()

    async def promote(version: int, environment: str) -> httpx.Response:
        body = {"version": version, "environment": environment}
        return await client.post("/v1/models/m/promotions", json=body, headers=ci)

    await step("model", await create_model(client, ci, "m", "high"))
    await step("v1", await register_version(client, ci, "m", seed=0))
    await record_compiled(resources, "m", 1)
    await record_compliance(resources, "m", 1, passed=True)
    await step("v1 certified")
    for headers in approvers:
        decided = await client.post(
            "/v1/models/m/versions/1/approvals",
            json={"decision": "approve", "comment": "reviewed"},
            headers=headers,
        )
        assert decided.status_code == 201, decided.text
    await step("v1 approved")
    await step("v1 in production", await promote(1, "production"))
    await step("v2", await register_version(client, ci, "m", seed=1))
    await record_compiled(resources, "m", 2)
    await step("v1 in staging", await promote(1, "staging"))
    await step("v2 in staging", await promote(2, "staging"))
    rollback = await client.post(
        "/v1/models/m/rollbacks", json={"environment": "staging", "reason": "bad"}, headers=ci
    )
    await step("staging rolled back", rollback)
    alert = {"version": 1, "statistic": "psi", "value": 0.15, "threshold": 0.1}
    drift = await client.post(
        "/v1/models/m/drift-alerts", json={**alert, "severity": "warning"}, headers=ci
    )
    await step("drift", drift)
    policy = {"required_approvals": 2, "compliance_required": True, "approval_expiry_days": 30}
    await step("policy", await client.put("/v1/policies/high", json=policy, headers=admin), 200)
    return flow


# ---------------------------------------------------------------------------------------------
# uploads


async def _token(resources: Resources, role: str, subject: str) -> dict[str, str]:
    issued = await tokens.issue(
        resources.store,
        resources.projector,
        resources.minter,
        IssueToken(subject=subject, role=role),
        meta=EventMeta(actor="test-setup", role="admin"),
    )
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Resources]]:
    """An app whose uploads are limited to 100,000 bytes (JSON bodies to 64 KiB)."""
    small = msgspec.structs.replace(settings, max_upload_bytes=100_000)
    async with running(create_app(small)) as application:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as http:
            yield http, application.state.resources


def _stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_upload_over_the_limit_is_413_and_appends_nothing(
    limited: tuple[httpx.AsyncClient, Resources],
) -> None:
    client, resources = limited
    ci = await _token(resources, "ci", "pipeline")
    assert (await create_model(client, ci, "m")).status_code == 201
    stored_before = _stored_files(resources.artifacts.root)
    head, _ = await resources.store.head()

    huge = lightgbm_model_bytes(0) + b"\n" + b"x" * 200_000
    body = assert_problem(await register_version(client, ci, "m", artifact=huge), 413)
    assert "limit" in body["detail"] or "large" in body["detail"].lower()
    csv = b"a,b\n" + b"1,2\n" * 50_000
    too_big = await client.post(
        "/v1/datasets", files={"file": ("d.csv", csv, "text/csv")}, headers=ci
    )
    assert_problem(too_big, 413)
    assert (await resources.store.head())[0] == head
    # nothing half-written is left behind in the artifact store either
    assert _stored_files(resources.artifacts.root) == stored_before

    # the upload limit, not the 64 KiB JSON limit, applies to uploads
    medium = b"a,b\n" + b"1,2\n" * 20_000  # 80,004 bytes
    accepted = await client.post(
        "/v1/datasets", files={"file": ("d.csv", medium, "text/csv")}, headers=ci
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["rows"] == 20_000


async def test_dataset_upload_describes_a_csv_and_refuses_garbage(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci")
    csv = b"amount,age,label\n12.5,31,0\n80.0,45,1\n3.25,22,0\n"
    created = await client.post(
        "/v1/datasets", files={"file": ("train.csv", csv, "text/csv")}, headers=ci
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["sha256"] == hashlib.sha256(csv).hexdigest()
    assert body["rows"] == 3 and body["columns"] == ["amount", "age", "label"]
    assert resources.artifacts.exists(body["sha256"])

    head, _ = await resources.store.head()
    for garbage in (
        bytes(range(256)) * 8,  # binary, not UTF-8
        b"a,b\n1,2,3,4\n5\n",  # rows of the wrong width
        b"",  # empty
    ):
        refused = await client.post(
            "/v1/datasets", files={"file": ("x.csv", garbage, "text/csv")}, headers=ci
        )
        assert_problem(refused, 422)
    # no `file` part at all
    assert_problem(
        await client.post("/v1/datasets", files={"other": ("x.csv", csv)}, headers=ci), 422
    )
    assert (await resources.store.head())[0] == head


# ---------------------------------------------------------------------------------------------
# dossier


async def test_dossier_of_a_promoted_version(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    flow = await governance_flow(client, auth, resources)
    url = "/v1/models/m/versions/1/dossier"
    response = await client.get(url, headers=flow.auditor)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    card = response.json()
    assert card["model"]["name"] == "m" and card["model"]["risk_tier"] == "high"
    assert card["version"]["number"] == 1 and card["version"]["registered_by"] == "pipeline"
    assert card["lineage"]["git_commit"] == "abc123"
    assert card["metrics"] == {"auc": 0.91}
    assert card["compiled"]["library_sha256"] == f"{1:064x}"
    gates = {g["name"]: g for g in card["gates"]}
    assert {"compiled", "approvals"} <= set(gates)
    assert all(g["passed"] for g in gates.values()), gates
    # approvals carry the policy version in force when given (the default, 0), while the
    # dossier shows the tier's policy now (changed once since)
    assert [a["approver"] for a in card["approvals"]] == list(APPROVERS)
    assert all(a["policy_version"] == 0 and a["counts"] for a in card["approvals"])
    assert card["policy"]["version"] == 1
    deployed = [(d["environment"], d["champion"]) for d in card["deployments"]]
    assert ("production", 1) in deployed and ("staging", 1) in deployed
    assert {"environment": "production", "role": "champion"}.items() <= next(
        s for s in card["currently_serving"] if s["environment"] == "production"
    ).items()
    assert [d["severity"] for d in card["drift"]] == ["warning"]

    markdown = await client.get(url, headers={**flow.auditor, "Accept": "text/markdown"})
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    text = markdown.text
    assert "version 1" in text.splitlines()[0]
    for expected in (*APPROVERS, f"{1:064x}", "abc123", "production"):
        assert expected in text, expected

    assert (await client.get(url, headers=flow.admin)).status_code == 200
    assert_problem(await client.get(url, headers=flow.ci), 403)
    assert_problem(await client.get("/v1/models/m/versions/9/dossier", headers=flow.auditor), 404)
    assert_problem(await client.get("/v1/models/no/versions/1/dossier", headers=flow.auditor), 404)


# ---------------------------------------------------------------------------------------------
# the registry as of an instant, and diffs


def keyed(registry: dict[str, Any]) -> dict[str, Any]:
    """A registry response keyed by model name and version number (as the diff is)."""
    return {
        model["name"]: {**model, "versions": {str(v["version"]): v for v in model["versions"]}}
        for model in registry["models"]
    }


def apply_changes(document: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a registry diff (`{path, change: added|removed|changed, before?, after?}`)."""
    result = copy.deepcopy(document)
    for change in changes:
        *parents, last = change["path"].split("/")[1:]
        target = result
        for key in parents:
            target = target[key]
        if change["change"] == "removed":
            assert target[last] == change["before"], change
            del target[last]
        elif change["change"] == "added":
            assert last not in target, change
            target[last] = change["after"]
        else:
            assert change["change"] == "changed" and target[last] == change["before"], change
            target[last] = change["after"]
    return result


async def test_registry_as_of_equals_what_it_was_and_diffs_apply(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    flow = await governance_flow(client, auth, resources, capture=True)
    anyone = await auth("scorer")
    for name, then in flow.captured.items():
        position, time = then["as_of"]["position"], then["as_of"]["time"]
        for as_of in (str(position), time):
            replayed = await client.get("/v1/registry", params={"as_of": as_of}, headers=anyone)
            assert replayed.status_code == 200, replayed.text
            assert replayed.json() == then, f"{name} as of {as_of}"

    a, b = flow.captured["v1 in staging"], flow.captured["v2 in staging"]
    found = await client.get(
        "/v1/registry/diff",
        params={"from": str(a["as_of"]["position"]), "to": b["as_of"]["time"]},
        headers=anyone,
    )
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["from"]["position"] == a["as_of"]["position"]
    assert body["to"]["position"] == b["as_of"]["position"]
    assert apply_changes(keyed(a), body["changes"]) == keyed(b)
    changes = {c["path"]: c for c in body["changes"]}
    champion = changes["/m/deployments/staging/champion"]
    assert champion["change"] == "changed" and (champion["before"], champion["after"]) == (1, 2)

    # from the empty registry to now: the diff rebuilds the whole registry
    first, last = flow.captured["model"], flow.captured["policy"]
    whole = (await client.get("/v1/registry/diff", params={"from": "0"}, headers=anyone)).json()
    assert apply_changes({}, whole["changes"]) == keyed(last)
    span = await client.get(
        "/v1/registry/diff",
        params={"from": str(first["as_of"]["position"]), "to": str(last["as_of"]["position"])},
        headers=anyone,
    )
    assert apply_changes(keyed(first), span.json()["changes"]) == keyed(last)

    assert_problem(
        await client.get("/v1/registry", params={"as_of": "yesterday"}, headers=anyone), 422
    )
    assert_problem(
        await client.get("/v1/registry", params={"as_of": "2026-01-01T00:00:00"}, headers=anyone),
        422,
    )


# ---------------------------------------------------------------------------------------------
# a model's history


async def test_model_history_as_of_and_by_type(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    flow = await governance_flow(client, auth, resources, capture=True)
    url = "/v1/models/m/history"
    full = await client.get(url, headers=flow.auditor)
    assert full.status_code == 200, full.text
    events = full.json()["events"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for event in events:
        assert set(event) >= EVENT_FIELDS, event
        assert event["stream"] == "model-m" and len(event["hash"]) == 64
        assert event["data"]["type"] == event["type"]
        assert event["meta"]["actor"] and event["meta"]["role"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    approvals = [e for e in events if e["type"] == "version.approved"]
    assert [(e["meta"]["actor"], e["meta"]["role"]) for e in approvals] == [
        (name, "approver") for name in APPROVERS
    ]

    cut = flow.captured["v1 in production"]["as_of"]["position"]
    for as_of in (str(cut), flow.captured["v1 in production"]["as_of"]["time"]):
        then = (await client.get(url, params={"as_of": as_of}, headers=flow.auditor)).json()
        assert then["as_of_position"] == cut
        assert then["events"] == [e for e in events if e["position"] <= cut]
        assert then["events"][-1]["type"] == "deployment.changed"

    kind = {"type": "deployment.changed"}
    deployments = (await client.get(url, params=kind, headers=flow.auditor)).json()["events"]
    assert deployments == [e for e in events if e["type"] == "deployment.changed"]
    # production v1, staging v1, staging v2, the rollback
    assert [(e["data"]["environment"], e["data"]["champion"]) for e in deployments] == [
        ("production", 1),
        ("staging", 1),
        ("staging", 2),
        ("staging", 1),
    ]
    both = (await client.get(url, params={**kind, "as_of": str(cut)}, headers=flow.auditor)).json()[
        "events"
    ]
    assert both == deployments[:1]

    assert (await client.get(url, headers=flow.admin)).status_code == 200
    assert_problem(await client.get(url, headers=flow.ci), 403)
    assert_problem(await client.get("/v1/models/nosuch/history", headers=flow.auditor), 404)


# ---------------------------------------------------------------------------------------------
# projections rebuilt from the log


async def _snapshot(conn: asyncpg.Connection, tables: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of each table, ordered by its primary key."""
    snapshot = {}
    for table in tables:
        key = await conn.fetch(
            "SELECT a.attname FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = $1::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            table,
        )
        order = ", ".join(f'"{row[0]}"' for row in key) or "1"
        rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
        snapshot[table] = [dict(row) for row in rows]
    return snapshot


async def test_projections_rebuild_to_identical_rows(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, database_url: str
) -> None:
    await governance_flow(client, auth, resources)
    declared = {t for p in resources.projector.projections for t in p.tables}
    tables = sorted(declared | set(GOVERNANCE_TABLES))
    conn = await asyncpg.connect(database_url)
    try:
        before = await _snapshot(conn, tables)
        head, _ = await resources.store.head()
        assert await resources.projector.rebuild() == head
        after = await _snapshot(conn, tables)
    finally:
        await conn.close()
    for table in GOVERNANCE_TABLES:
        assert before[table], f"the flow left {table} empty: the comparison would prove nothing"
    assert len(before["approvals"]) == 2 and len(before["deployment_history"]) == 4
    for table in tables:
        assert after[table] == before[table], table


# ---------------------------------------------------------------------------------------------
# one model's audit bundle


def _cli(settings: Settings, *args: str) -> Result:
    env = {
        "MODEL_LEDGER_DATABASE_URL": str(settings.database_url),
        "MODEL_LEDGER_REDIS_URL": str(settings.redis_url),
        "MODEL_LEDGER_HOME": str(settings.home),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


async def test_export_of_one_model_verifies_and_shows_only_its_events(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    settings: Settings,
    tmp_path: Path,
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "m")).status_code == 201
    assert (await create_model(client, ci, "other")).status_code == 201
    assert (await register_version(client, ci, "m")).status_code == 201
    assert (await register_version(client, ci, "other")).status_code == 201
    await record_compiled(resources, "m", 1)

    bundle = tmp_path / "m.jsonl"
    # the CLI runs its own event loop: keep it off this test's loop
    run: Callable[..., Awaitable[Result]] = asyncio.to_thread
    exported = await run(_cli, settings, "export", "--model", "m", "--out", str(bundle))
    assert exported.exit_code == 0, exported.output
    report = verify_file(bundle)
    assert report.ok and report.first_broken_position is None, report

    lines = [json.loads(line) for line in bundle.read_text().splitlines()]
    header, rest = lines[0], lines[1:]
    assert header["kind"] == "header" and header["scope"] == "model:m"
    chain = [line for line in rest if line["kind"] in ("event", "link")]
    head, _ = await resources.store.head()
    assert [line["position"] for line in chain] == list(range(1, head + 1))
    events = [line for line in chain if line["kind"] == "event"]
    model_positions = [
        e.position for e in await resources.store.read_stored(0, 10_000, stream="model-m")
    ]
    assert {e["stream"] for e in events} == {"model-m"}
    assert [e["position"] for e in events] == model_positions
    links = [line for line in chain if line["kind"] == "link"]
    assert links and all(set(link) == {"kind", "position", "prev_hash", "hash"} for link in links)
    assert "other" not in "".join(json.dumps(link) for link in links)
    assert any(line["kind"] == "checkpoint" for line in rest)

    # tampering with one of the model's events is found at its position
    registered = next(e for e in events if e["type"] == "model.registered")
    assert "fraud-team" in registered["data"]
    tampered_lines = []
    for line in lines:
        if line is registered:
            forged = line["data"].replace("fraud-team", "other-team")
            tampered_lines.append(json.dumps({**line, "data": forged}))
        else:
            tampered_lines.append(json.dumps(line))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(tampered_lines) + "\n")
    broken = verify_file(tampered)
    assert not broken.ok and broken.first_broken_position == registered["position"]

    missing = tmp_path / "nosuch.jsonl"
    refused = await run(_cli, settings, "export", "--model", "nosuch", "--out", str(missing))
    assert refused.exit_code != 0
    assert "nosuch" in refused.output and "Traceback" not in refused.output
    assert not missing.exists()


# ---------------------------------------------------------------------------------------------
# regressions of bugs these tests found


async def test_non_ascii_digits_in_as_of_or_if_match_are_problems_not_500(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci, auditor = await auth("ci", "pipeline"), await auth("auditor")
    assert (await create_model(client, ci, "m")).status_code == 201
    for as_of in ("²", "1²", "①"):
        for url, params in (
            ("/v1/registry", {"as_of": as_of}),
            ("/v1/registry/diff", {"from": as_of}),
            ("/v1/models/m/history", {"as_of": as_of}),
        ):
            response = await client.get(url, params=params, headers=auditor)
            assert response.status_code == 422, (url, as_of, response.status_code)
    promote = {"version": 1, "environment": "staging"}
    conditional = {**ci, "If-Match": '"²"'.encode("latin-1")}
    for url, body in (
        ("/v1/models/m/promotions", promote),
        ("/v1/models/m/deployment-changes", {"changes": [promote]}),
    ):
        response = await client.post(url, json=body, headers=conditional)  # type: ignore[arg-type]
        assert response.status_code == 422, (url, response.status_code)


async def test_markdown_dossier_names_its_charset_once(
    client: httpx.AsyncClient, auth: TokenFactory
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "m")).status_code == 201
    assert (await register_version(client, ci, "m")).status_code == 201
    markdown = await client.get(
        "/v1/models/m/versions/1/dossier",
        headers={**await auth("auditor"), "Accept": "text/markdown"},
    )
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"


async def test_an_empty_or_ambiguous_change_set_is_refused(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    ci = await auth("ci", "pipeline")
    assert (await create_model(client, ci, "m")).status_code == 201
    head, _ = await resources.store.head()
    empty = await client.post("/v1/models/m/deployment-changes", json={"changes": []}, headers=ci)
    assert empty.status_code == 422
    twice = {"version": 1, "environment": "staging"}
    same_env = await client.post(
        "/v1/models/m/deployment-changes", json={"changes": [twice, twice]}, headers=ci
    )
    assert same_env.status_code == 422
    assert (await resources.store.head())[0] == head
