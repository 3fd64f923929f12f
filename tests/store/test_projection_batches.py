"""The governance views are the same however the log is paged and committed, and a
transaction that failed half-way leaves nothing behind (not even in the projection's cache)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import asyncpg
import pytest

from app.resources import Resources
from app.store import projector
from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.errors import DomainError
from domain.policy import Policy

CI = ev.EventMeta(actor="pipeline", role="ci")
APPROVERS = [ev.EventMeta(actor=name, role="approver") for name in ("bob", "carol")]


async def _story(resources: Resources, name: str) -> None:
    """Versions, approvals and a revocation, promotions, drift, retirement, a policy change."""
    gov = resources.governance
    await gov.register_model(cmd.RegisterModel(name=name, risk_tier="low"), CI, None)
    for number in (1, 2, 3):
        version = cmd.RegisterVersion(
            artifact_sha256=uuid.uuid4().hex * 2,
            artifact_size=1,
            format="lightgbm",
            model_feature_names=["a", "b"],
            metrics={"auc": 0.9},
        )
        await gov.register_version(name, version, CI, None)
        compiled = ev.VersionCompiled(
            name=name, version=number, library_sha256="b" * 64, max_abs_diff=0.0, rows_checked=1
        )
        await resources.store.append(model_stream(name), [compiled], meta=CI, expected_version=None)
        for approver in APPROVERS:
            await gov.decide_version(name, number, cmd.Decide(decision="approve"), approver, None)
        with contextlib.suppress(DomainError):
            await gov.promote(name, [cmd.Promote(version=number, environment="staging")], CI, None)
    await gov.revoke_decision(name, 2, "wrong run", APPROVERS[0], None)
    await gov.decide_version(name, 2, cmd.Decide(decision="approve"), APPROVERS[0], None)
    await gov.set_policy(
        "low", Policy(required_approvals=2), ev.EventMeta(actor="root", role="admin"), None
    )
    alert = cmd.RaiseDriftAlert(
        version=3, statistic="psi", value=0.5, threshold=0.2, severity="critical"
    )
    await gov.raise_drift_alert(name, alert, CI, None)
    with contextlib.suppress(DomainError):
        await gov.retire(name, 1, "old", CI, None)


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
    await resources.projector.catch_up()
    views = await _views(resources)
    assert len(views["registry_snapshots"]) > 3 and views["approvals"] and views["policies"]
    assert any(row["revoked_reason"] for row in views["approvals"])
    return views


async def test_small_pages_and_transactions_give_the_same_views(
    resources: Resources, told: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # snapshots (every 7 positions in tests) fall inside pages and transactions
    monkeypatch.setattr(projector, "_PAGE", 5)
    monkeypatch.setattr(projector, "_TRANSACTION_EVENTS", 12)
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
