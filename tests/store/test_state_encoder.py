"""The governance projection's state encoder gives the bytes of encoding the whole state;
its snapshot marks are every `every` events, then every eighth of the stream.

It reuses the msgpack of versions and drift alerts encoded before; that is sound only if an
event changes no version but the one it names and alerts are only appended. Random logs
(any order, unknown versions included: a fold must survive any log) check both.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from app.store.projections.governance import SnapshotSchedule, StateEncoder
from domain import events as ev
from domain.model import evolve
from domain.state import EventContext, ModelState

NAME = "fraud"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
number = st.integers(1, 4)
environment = st.sampled_from(["staging", "production"])
approver = st.sampled_from(["bob", "carol"])

event = st.one_of(
    st.builds(lambda: ev.ModelRegistered(name=NAME, risk_tier="low")),
    st.builds(lambda d: ev.ModelUpdated(name=NAME, description=d), st.text(max_size=5)),
    st.builds(
        lambda n: ev.VersionRegistered(
            name=NAME,
            version=n,
            artifact_sha256=f"{n:064x}",
            artifact_size=1,
            format="lightgbm",
            feature_names=["a"],
        ),
        number,
    ),
    st.builds(
        lambda n: ev.JobRequested(job_id=f"job-{n}", kind="compile", name=NAME, version=n),
        number,
    ),
    st.builds(
        lambda n, d: ev.VersionCompiled(
            name=NAME, version=n, library_sha256="b" * 64, max_abs_diff=d, rows_checked=1
        ),
        number,
        st.floats(0, 1e-9),
    ),
    st.builds(
        lambda n: ev.ComplianceChecked(
            name=NAME,
            version=n,
            passed=True,
            report_sha256="c" * 64,
            policy_version=0,
            metrics={"dp": 0.01},
        ),
        number,
    ),
    st.builds(
        lambda n, a: ev.VersionApproved(
            name=NAME,
            version=n,
            approver=a,
            policy_version=0,
            artifact_sha256=f"{n:064x}",
            library_sha256="b" * 64,
            expires_at=T0 + timedelta(days=90),
        ),
        number,
        approver,
    ),
    st.builds(
        lambda n, a: ev.VersionRejected(name=NAME, version=n, approver=a, policy_version=0),
        number,
        approver,
    ),
    st.builds(
        lambda n, a: ev.ApprovalRevoked(name=NAME, version=n, approver=a, reason="r"),
        number,
        approver,
    ),
    st.builds(
        lambda n, e, action: ev.DeploymentChanged(
            name=NAME, environment=e, action=action, version=n, champion=n
        ),
        number,
        environment,
        st.sampled_from(["promote", "rollback"]),
    ),
    st.builds(lambda n: ev.VersionRetired(name=NAME, version=n, reason="old"), number),
    st.builds(
        lambda n: ev.DriftDetected(
            name=NAME, version=n, statistic="psi", value=0.3, threshold=0.2, severity="warning"
        ),
        number,
    ),
)


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


@settings(max_examples=200, deadline=None)
@given(log=st.lists(event, min_size=1, max_size=40))
def test_reused_parts_give_the_bytes_of_a_whole_encoding(log: list[ev.Event]) -> None:
    encoder, state = StateEncoder(), None
    for position, folded in enumerate(log, start=1):
        ctx = EventContext(
            position=position,
            recorded_at=T0 + timedelta(seconds=position),
            actor="pipeline",
            role="ci",
            stream_version=position,
        )
        before = None if state is None else _plain(state)
        state = evolve(state, folded, ctx)  # type: ignore[arg-type]
        if state is None:
            continue
        encoder.folded(NAME, folded)
        if before is not None and not isinstance(folded, ev.ModelRegistered):
            _assert_touched_at_most_its_version(before, _plain(state), folded)
        assert encoder.encode(state) == msgspec.msgpack.encode(state)
        assert msgspec.msgpack.decode(encoder.encode(state), type=ModelState) == state


def _assert_touched_at_most_its_version(
    before: dict[str, Any], after: dict[str, Any], event: ev.Event
) -> None:
    named = getattr(event, "version", None)
    for key, version in before["versions"].items():
        if key != named:
            assert after["versions"][key] == version, f"{type(event).__name__} changed {key}"
    alerts = before["drift_alerts"]
    assert after["drift_alerts"][: len(alerts)] == alerts, "drift alerts are only appended"


def test_snapshot_marks_are_fixed_then_grow_with_the_stream() -> None:
    schedule = SnapshotSchedule(250)
    marks = schedule.marks(100_000)
    assert marks[:8] == [250 * k for k in range(1, 9)]  # up to 2,000 events: every 250
    assert marks[8:10] == [2_250, 2_250 + 2_250 // 8]
    assert all(b - a == max(250, a // 8) for a, b in itertools.pairwise(marks))
    assert len(marks) == 41  # 8 + ln(100,000 / 2,000) / ln(9 / 8) ~ 41, not 400
    # an event is due when its version passes a mark, whatever the step
    assert schedule.due(249, 250) and not schedule.due(250, 251)
    assert schedule.due(200, 900) and not schedule.due(2_250, 2_250 + 281 - 1)
    assert [v for v in range(1, 3_000) if schedule.due(v - 1, v)] == schedule.marks(2_999)
