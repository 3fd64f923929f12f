"""The governance projection's flat tables: a run of events' rows, one statement per table.

Upserts keep one row per key, with what row-by-row statements would have left: the inserted
columns of the first row and the updated columns of the last. Append-only tables are
written with COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from app.store.codec import RecordedEvent
from domain import events as ev
from domain.state import ModelState, VersionState

_policy_encoder = msgspec.json.Encoder()

_VERSION_COLUMNS = [
    "name",
    "version",
    "format",
    "artifact_sha256",
    "library_sha256",
    "registered_at",
    "registered_by",
    "retired_at",
    "position",
]
_VERSION_CONFLICT = (
    "ON CONFLICT (name, version) DO UPDATE SET library_sha256 = excluded.library_sha256, "
    "retired_at = excluded.retired_at, position = excluded.position"
)
_UPSERT_VERSIONS = (
    f"INSERT INTO versions ({', '.join(_VERSION_COLUMNS)}) "  # noqa: S608 - fixed
    "SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], "
    f"$6::timestamptz[], $7::text[], $8::timestamptz[], $9::bigint[]) {_VERSION_CONFLICT}"
)
# Past this many rows an upsert goes through a temporary table filled by COPY: the
# server parses arrays for `unnest` at about half the speed.
_COPY_ABOVE = 1_000

_UPSERT_DEPLOYMENTS = (
    "INSERT INTO deployments (name, environment, champion, challenger, strategy, "
    "traffic_percent, updated_at, position) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], "
    "$6::float8[], $7::timestamptz[], $8::bigint[]) "
    "ON CONFLICT (name, environment) DO UPDATE SET champion = excluded.champion, "
    "challenger = excluded.challenger, strategy = excluded.strategy, "
    "traffic_percent = excluded.traffic_percent, updated_at = excluded.updated_at, "
    "position = excluded.position"
)
_UPSERT_POLICIES = (
    "INSERT INTO policies (risk_tier, version, policy, position) "
    "SELECT * FROM unnest($1::text[], $2::int[], $3::json[], $4::bigint[]) "
    "ON CONFLICT (risk_tier) DO UPDATE SET version = excluded.version, "
    "policy = excluded.policy, position = excluded.position"
)
_REVOKE = (
    "UPDATE approvals SET revoked_reason = $4 WHERE name = $1 AND version = $2 "
    "AND approver = $3 AND revoked_reason IS NULL"
)
_HISTORY_COLUMNS = [
    "position",
    "name",
    "environment",
    "action",
    "version",
    "champion",
    "challenger",
    "strategy",
    "traffic_percent",
    "actor",
    "reason",
    "recorded_at",
]
_APPROVAL_COLUMNS = [
    "position",
    "name",
    "version",
    "approver",
    "decision",
    "comment",
    "policy_version",
    "expires_at",
    "recorded_at",
    "revoked_reason",
]
_DRIFT_COLUMNS = [
    "position",
    "name",
    "version",
    "statistic",
    "value",
    "threshold",
    "severity",
    "feature",
    "environment",
    "recorded_at",
]
_APPROVAL_REVOKED_REASON = len(_APPROVAL_COLUMNS) - 1


class AppendedRows:
    """What a run of events adds: history, approvals, revocations, drift alerts, policies."""

    def __init__(self) -> None:
        self.history: list[tuple[Any, ...]] = []
        self.approvals: list[list[Any]] = []
        self.revocations: list[tuple[str, int, str, str]] = []
        self.drift: list[tuple[Any, ...]] = []
        self.policies: dict[str, tuple[Any, ...]] = {}

    async def write(self, conn: asyncpg.Connection) -> None:
        """One statement per table: COPY for the append-only ones."""
        if self.policies:
            await conn.execute(_UPSERT_POLICIES, *_columns(self.policies.values(), 4))
        if self.revocations:
            await conn.executemany(_REVOKE, self.revocations)
        for table, rows, columns in (
            ("deployment_history", self.history, _HISTORY_COLUMNS),
            ("approvals", self.approvals, _APPROVAL_COLUMNS),
            ("drift_alerts", self.drift, _DRIFT_COLUMNS),
        ):
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=columns)


class FlatRows:
    """The flat-table rows of a transaction's events, written in one statement per table.

    Appended rows are handed over (`take_appended`) after each run of events; the upserted
    versions and deployments, many events per row, are written once at the end.
    """

    def __init__(self) -> None:
        # each version an event touched: its state when first touched (the inserted
        # columns), its state now (the updated ones) and the position of the last event
        self.versions: dict[tuple[str, int], tuple[VersionState, VersionState, int]] = {}
        self.deployments: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.appended = AppendedRows()

    def take_appended(self) -> AppendedRows:
        """The rows appended since the last call; the next ones gather apart."""
        taken, self.appended = self.appended, AppendedRows()
        return taken

    def policy(self, recorded: RecordedEvent, event: ev.PolicySet) -> None:
        """The policies row a policy event leaves."""
        self.appended.policies[event.risk_tier] = (
            event.risk_tier,
            recorded.version,
            _policy_encoder.encode(event.policy).decode(),
            recorded.position,
        )

    def add(self, recorded: RecordedEvent, state: ModelState) -> None:
        """The rows one model event (already folded into `state`) changes."""
        event, at, position = recorded.event, recorded.recorded_at, recorded.position
        kind = type(event)  # event classes are final: an exact type is an isinstance
        number = getattr(event, "version", None)
        if type(number) is int and kind is not ev.JobRequested:
            version = state.versions.get(number)
            if version is not None:  # its row is built when written, from its last state
                key = (state.name, number)
                first = self.versions.get(key)
                self.versions[key] = (version if first is None else first[0], version, position)
        if kind is ev.DeploymentChanged:
            assert isinstance(event, ev.DeploymentChanged)
            slot = state.deployments[event.environment]
            self.deployments[(state.name, event.environment)] = (
                state.name,
                event.environment,
                slot.champion,
                slot.challenger,
                slot.strategy,
                slot.traffic_percent,
                at,
                position,
            )
            self.appended.history.append(
                (
                    position,
                    state.name,
                    event.environment,
                    event.action,
                    event.version,
                    event.champion,
                    event.challenger,
                    event.strategy,
                    event.traffic_percent,
                    recorded.meta.actor,
                    event.reason,
                    at,
                )
            )
        elif kind is ev.VersionApproved or kind is ev.VersionRejected:
            assert isinstance(event, (ev.VersionApproved, ev.VersionRejected))
            self.appended.approvals.append(
                [
                    position,
                    state.name,
                    event.version,
                    event.approver,
                    "approve" if isinstance(event, ev.VersionApproved) else "reject",
                    event.comment,
                    event.policy_version,
                    getattr(event, "expires_at", None),
                    at,
                    None,
                ]
            )
        elif kind is ev.ApprovalRevoked:
            assert isinstance(event, ev.ApprovalRevoked)
            self._revoke(state.name, event)
        elif kind is ev.DriftDetected:
            assert isinstance(event, ev.DriftDetected)
            self.appended.drift.append(
                (
                    position,
                    state.name,
                    event.version,
                    event.statistic,
                    event.value,
                    event.threshold,
                    event.severity,
                    event.feature,
                    event.environment,
                    at,
                )
            )

    def _revoke(self, name: str, event: ev.ApprovalRevoked) -> None:
        # rows handed over already are updated in the database, after they land
        self.appended.revocations.append((name, event.version, event.approver, event.reason))
        for row in self.appended.approvals:
            if row[1:4] == [name, event.version, event.approver] and row[-1] is None:
                row[_APPROVAL_REVOKED_REASON] = event.reason

    async def write_upserted(self, conn: asyncpg.Connection) -> None:
        """Write the versions and deployments rows gathered so far."""
        if self.versions:
            rows = [_version_row(name, *entry) for (name, _), entry in self.versions.items()]
            if len(rows) > _COPY_ABOVE:
                await _upsert_copied(conn, "versions", _VERSION_COLUMNS, rows, _VERSION_CONFLICT)
            else:
                await conn.execute(_UPSERT_VERSIONS, *_columns(rows, 9))
        if self.deployments:
            await conn.execute(_UPSERT_DEPLOYMENTS, *_columns(self.deployments.values(), 8))
        self.versions.clear()
        self.deployments.clear()


async def _upsert_copied(
    conn: asyncpg.Connection,
    table: str,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    conflict: str,
) -> None:
    """Upsert many rows: COPY them into a temporary table, insert from there."""
    staged = f"{table}_staged"
    await conn.execute(f"CREATE TEMP TABLE {staged} (LIKE {table}) ON COMMIT DROP")
    await conn.copy_records_to_table(staged, records=rows, columns=columns)
    listed = ", ".join(columns)
    await conn.execute(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {staged} {conflict}"  # noqa: S608
    )
    await conn.execute(f"DROP TABLE {staged}")


def _version_row(
    name: str, first: VersionState, last: VersionState, position: int
) -> tuple[Any, ...]:
    library = last.compiled.library_sha256 if last.compiled else None
    return (
        name,
        first.version,
        first.format,
        first.artifact_sha256,
        library,
        first.registered_at,
        first.registered_by,
        last.retired_at,
        position,
    )


def _columns(rows: Iterable[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column, for `unnest`."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
