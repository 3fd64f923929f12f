"""As-of reads equal a replay of the log, for random governance histories (hypothesis)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.resources import Resources
from app.services.registry import diff, keyed
from app.store.projections.governance import SnapshotSchedule
from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.errors import DomainError
from domain.policy import Policy

META = {name: ev.EventMeta(actor=name, role="ci") for name in ("pipeline", "bob", "carol")}

step = st.one_of(
    st.tuples(st.just("version"), st.integers(0, 1)),
    st.tuples(st.just("compile"), st.integers(1, 4)),
    st.tuples(st.just("approve"), st.integers(1, 4), st.sampled_from(["bob", "carol"])),
    st.tuples(st.just("promote"), st.integers(1, 4), st.sampled_from(["staging", "production"])),
    st.tuples(st.just("canary"), st.integers(1, 4)),
    st.tuples(st.just("rollback"), st.sampled_from(["staging", "production"])),
    st.tuples(st.just("retire"), st.integers(1, 4)),
    st.tuples(st.just("drift"), st.integers(1, 4)),
    st.tuples(st.just("policy"), st.integers(1, 2)),
)


async def run(resources: Resources, name: str, action: tuple[Any, ...]) -> None:
    gov, meta = resources.governance, META["pipeline"]
    kind = action[0]
    if kind == "version":
        command = cmd.RegisterVersion(
            name=name,
            compile_job_id=str(uuid.uuid4()),
            artifact_sha256=uuid.uuid4().hex * 2,
            artifact_size=1,
            format="lightgbm",
            model_feature_names=["a", "b"],
            metrics={"auc": 0.8 + action[1] / 10},
        )
        await gov.handle(command, meta)
    elif kind == "compile":
        await resources.store.append(
            model_stream(name),
            [
                ev.VersionCompiled(
                    name=name,
                    version=action[1],
                    library_sha256="b" * 64,
                    max_abs_diff=0.0,
                    rows_checked=1,
                )
            ],
            meta=meta,
            expected_version=None,
        )
    elif kind == "approve":
        approver = META[action[2]]
        decision = cmd.DecideVersion(
            name=name, version=action[1], approver=approver.actor, decision="approve"
        )
        await gov.handle(decision, approver)
    elif kind == "promote":
        change = cmd.Promote(version=action[1], environment=action[2])
        await gov.handle(cmd.ChangeDeployments(name=name, changes=[change]), meta)
    elif kind == "canary":
        change = cmd.Promote(
            version=action[1], environment="staging", strategy="canary", traffic_percent=20
        )
        await gov.handle(cmd.ChangeDeployments(name=name, changes=[change]), meta)
    elif kind == "rollback":
        await gov.handle(cmd.Rollback(name=name, environment=action[1], reason="r"), meta)
    elif kind == "retire":
        await gov.handle(cmd.RetireVersion(name=name, version=action[1], reason="old"), meta)
    elif kind == "drift":
        alert = cmd.RaiseDriftAlert(
            name=name,
            version=action[1],
            statistic="psi",
            value=0.5,
            threshold=0.2,
            severity="critical",
        )
        await gov.raise_drift_alert(alert, meta, None)
    elif kind == "policy":
        policy = cmd.SetPolicy(tier="low", policy=Policy(required_approvals=action[1]))
        await gov.handle(policy, ev.EventMeta(actor="root", role="admin"))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=3, max_size=14))
async def test_registry_as_of_equals_the_view_at_that_time(
    resources: Resources, steps: list[tuple[Any, ...]]
) -> None:
    name = f"m-{uuid.uuid4().hex[:8]}"
    await resources.governance.handle(
        cmd.RegisterModel(name=name, risk_tier="low"), META["pipeline"]
    )
    seen: list[tuple[int, Any]] = []
    for action in steps:
        with contextlib.suppress(DomainError):
            await run(resources, name, action)
        await resources.projector.catch_up()
        current = await resources.registry.view(None)
        seen.append((current.as_of.position, msgspec.to_builtins(current.models)))
    # the test settings snapshot a model every 7 events of its stream: replays start from
    # snapshots too (one per mark the stream passed)
    rows = await resources.store.pool.fetch(
        "SELECT stream_version FROM model_snapshots WHERE name = $1 ORDER BY 1", name
    )
    stream_version = await resources.store.pool.fetchval(
        "SELECT max(version) FROM events WHERE stream = $1", model_stream(name)
    )
    assert [r[0] for r in rows] == SnapshotSchedule(7).marks(stream_version)
    for position, expected in seen:
        replayed = await resources.registry.view(str(position))
        assert replayed.as_of.position == position
        assert msgspec.to_builtins(replayed.models) == expected
        alone = await resources.registry.view(str(position), [name])  # its own snapshot only
        assert msgspec.to_builtins(alone.models) == [m for m in expected if m["name"] == name]
        assert replayed.as_of.time is not None
        by_time = await resources.registry.view(replayed.as_of.time.isoformat())
        assert by_time.as_of.position == position
    before = keyed(await resources.registry.view(str(seen[0][0])))
    after = keyed(await resources.registry.view(str(seen[-1][0])))
    # the diff is exactly the difference: applying it to the first snapshot gives the second
    assert patched(before, diff(before, after)) == after


def patched(document: Any, changes: list[dict[str, Any]]) -> Any:
    """Apply diff entries (path, change, after) to a copy of a JSON-like document."""
    result = msgspec.json.decode(msgspec.json.encode(document))
    for change in changes:
        keys = change["path"].strip("/").split("/")
        if keys == [""]:
            return change["after"]
        parent = result
        for key in keys[:-1]:
            parent = parent[key] if isinstance(parent, dict) else parent[int(key)]
        if change["change"] == "removed":
            del parent[keys[-1]]
        elif isinstance(parent, list):
            parent[int(keys[-1])] = change["after"]
        else:
            parent[keys[-1]] = change["after"]
    return result
