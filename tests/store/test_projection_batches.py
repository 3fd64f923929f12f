"""The governance views are the same however the log is paged and committed, and a
transaction that failed half-way leaves nothing behind (not even in the projection's cache)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from app.resources import Resources
from app.store import projector
from app.store.events import EventStore
from app.store.projections import all_projections, governance_rows
from domain import commands as cmd
from domain import events as ev
from domain import jobs
from domain.decide import model_stream
from domain.errors import DomainError
from domain.policy import Policy

CI = ev.EventMeta(actor="pipeline", role="ci")
APPROVERS = [ev.EventMeta(actor=name, role="approver") for name in ("bob", "carol")]


async def _story(resources: Resources, name: str) -> None:
    """Versions, approvals and a revocation, promotions, drift, retirement, a policy change."""
    gov = resources.governance
    await gov.handle(cmd.RegisterModel(name=name, risk_tier="low"), CI)
    for number in (1, 2, 3):
        version = cmd.RegisterVersion(
            name=name,
            compile_job_id=str(uuid.uuid4()),
            artifact_sha256=uuid.uuid4().hex * 2,
            artifact_size=1,
            format="lightgbm",
            model_feature_names=["a", "b"],
            metrics={"auc": 0.9},
        )
        await gov.handle(version, CI)
        compiled = ev.VersionCompiled(
            name=name, version=number, library_sha256="b" * 64, max_abs_diff=0.0, rows_checked=1
        )
        await resources.store.append(model_stream(name), [compiled], meta=CI, expected_version=None)
        for approver in APPROVERS:
            await gov.handle(approve(name, number, approver), approver)
        with contextlib.suppress(DomainError):
            change = cmd.Promote(version=number, environment="staging")
            await gov.handle(cmd.ChangeDeployments(name=name, changes=[change]), CI)
    bob = APPROVERS[0]
    await gov.handle(cmd.RevokeDecision(name=name, version=2, approver="bob", reason="x"), bob)
    await gov.handle(approve(name, 2, bob), bob)
    policy = cmd.SetPolicy(tier="low", policy=Policy(required_approvals=2))
    await gov.handle(policy, ev.EventMeta(actor="root", role="admin"))
    alert = cmd.RaiseDriftAlert(
        name=name, version=3, statistic="psi", value=0.5, threshold=0.2, severity="critical"
    )
    await gov.raise_drift_alert(alert, CI, None)
    with contextlib.suppress(DomainError):
        await gov.handle(cmd.RetireVersion(name=name, version=1, reason="old"), CI)


def approve(name: str, number: int, approver: ev.EventMeta) -> cmd.DecideVersion:
    return cmd.DecideVersion(name=name, version=number, approver=approver.actor, decision="approve")


async def _job_outcomes(resources: Resources, name: str) -> None:
    """Attempts of the compile jobs of versions 1-3, retries, a late start, strays."""
    store, worker = resources.store, ev.EventMeta(actor="model-ledger:worker", role="worker")
    requests = {
        e.event.version: e.event
        for e in await store.read_stream(model_stream(name))
        if isinstance(e.event, ev.JobRequested)
    }
    one, two, three = requests[1], requests[2], requests[3]
    stray = ev.JobStarted(job_id="never-requested", kind="compile", name=name, attempt=1)
    outcomes: list[ev.Event] = [
        *jobs.started(cmd.StartAttempt(job=one, attempt=1, worker="w1")),
        *jobs.failed(cmd.FailAttempt(job=one, attempt=1, error="boom", final=False)),
        *jobs.started(cmd.StartAttempt(job=two, attempt=1, worker="w1")),
        *jobs.started(cmd.StartAttempt(job=one, attempt=2, worker="w2")),
        ev.JobSucceeded(
            job_id=one.job_id,
            kind=one.kind,
            name=name,
            attempt=2,
            seconds=1.5,
            result={"library_sha256": "b" * 64},
        ),
        *jobs.failed(
            cmd.FailAttempt(
                job=two, attempt=1, error="bad input", final=True, details={"column": "x"}
            )
        ),
        # a late delivery never reopens a finished job
        *jobs.started(cmd.StartAttempt(job=two, attempt=3, worker="w3")),
        msgspec.structs.replace(three, params={"again": True}),  # a second request: no change
        stray,
        *jobs.started(cmd.StartAttempt(job=three, attempt=1, worker="w1")),
    ]
    for event in outcomes:
        await store.append(model_stream(name), [event], meta=worker, expected_version=None)


async def _views(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the projections own, in primary-key order."""
    views = {}
    async with resources.store.pool.acquire() as conn:
        for table in sorted({t for p in resources.projector.projections for t in p.tables}):
            views[table] = [dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]
    return {t: sorted(rows, key=repr) for t, rows in views.items()}


@pytest.fixture
async def told(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """Two models' stories, projected page by page as the server does; the views it left."""
    for name in ("m-a", "m-b"):
        await _story(resources, name)
        await _job_outcomes(resources, name)
    await resources.projector.catch_up()
    views = await _views(resources)
    jobs_of_a = {row["version"]: row for row in views["jobs"] if row["name"] == "m-a"}
    assert {v: (r["status"], r["attempts"]) for v, r in jobs_of_a.items()} == {
        1: ("succeeded", 2),
        2: ("failed", 3),
        3: ("running", 1),
    }
    assert jobs_of_a[1]["error"] is None and jobs_of_a[2]["error"] == "bad input"
    assert jobs_of_a[3]["params"] != '{"again":true}' and "never-requested" not in str(views)
    assert len(views["model_snapshots"]) > 3 and views["approvals"] and views["policies"]
    assert any(row["revoked_reason"] for row in views["approvals"])
    return views


async def test_small_pages_and_transactions_give_the_same_views(
    resources: Resources, told: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # snapshots (every 7 events of a model's stream in tests) fall inside pages and transactions
    monkeypatch.setattr(projector, "_PAGE", 5)
    monkeypatch.setattr(projector, "_TRANSACTION_EVENTS", 12)
    await resources.projector.rebuild()
    assert await _views(resources) == told


async def test_large_upserts_through_a_staging_table_give_the_same_views(
    resources: Resources, told: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(governance_rows, "_COPY_ABOVE", 0)
    monkeypatch.setattr(projector, "_TRANSACTION_EVENTS", 40)  # several transactions
    await resources.projector.rebuild()
    assert await _views(resources) == told


# the second transaction fails: in its first page (states changed, not written) or in its
# flush (states written, then rolled back); the first transaction committed
@pytest.mark.parametrize(("failing", "call"), [("apply", 4), ("flush", 2)])
async def test_a_transaction_failing_half_way_leaves_nothing_behind(
    resources: Resources,
    told: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
    call: int,
) -> None:
    monkeypatch.setattr(projector, "_PAGE", 5)
    monkeypatch.setattr(projector, "_TRANSACTION_EVENTS", 12)
    governance = next(p for p in resources.projector.projections if p.name == "governance")
    step, calls = getattr(governance, failing), 0

    async def fails_once(conn: asyncpg.Connection, *args: Any) -> None:
        nonlocal calls
        calls += 1
        await step(conn, *args)  # the states in memory move on, then the transaction fails
        if calls == call:
            raise RuntimeError("the database went away")

    monkeypatch.setattr(governance, failing, fails_once)
    with pytest.raises(RuntimeError, match="went away"):
        await resources.projector.rebuild()
    monkeypatch.setattr(governance, failing, step)
    await resources.projector.catch_up()
    assert await _views(resources) == told


async def test_projections_at_different_positions_each_take_their_own_events(
    resources: Resources, told: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the jobs and tokens views start over while governance stays at the head: one read
    # serves both, each applying only events of its types past its own checkpoint
    monkeypatch.setattr(projector, "_PAGE", 5)
    async with resources.store.pool.acquire() as conn:
        await conn.execute("TRUNCATE jobs, tokens")
        await conn.execute(
            "UPDATE projection_checkpoints SET position = 0 WHERE name IN ('jobs', 'tokens')"
        )
    await resources.projector.catch_up()
    assert await _views(resources) == told


async def test_a_pool_of_one_connection_applies_projections_one_by_one(
    resources: Resources, told: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no connection to read ahead or to give each projection: pages are read in the
    # transaction, one projection after the other
    monkeypatch.setattr(projector, "_PAGE", 5)
    url = resources.settings.database_url
    assert url is not None
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        store = EventStore(pool)
        alone = projector.Projector(store, all_projections(snapshot_every=7))
        await alone.rebuild()
    assert await _views(resources) == told


async def test_rebuilds_of_two_projectors_never_wait_for_each_other(
    resources: Resources, told: dict[str, Any]
) -> None:
    # a rebuild locks every checkpoint in one transaction, views advancing together lock
    # theirs in one transaction each: taken in different orders, they waited forever
    other = projector.Projector(resources.store, all_projections(snapshot_every=7))
    async with asyncio.timeout(120):
        for _ in range(4):
            await asyncio.gather(other.rebuild(), resources.projector.rebuild())
    assert await _views(resources) == told
