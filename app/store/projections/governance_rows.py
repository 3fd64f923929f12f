"""The governance projection's flat tables: a run of events' rows, one statement per table.

A table's row is a Struct whose fields are the table's columns in `app.store.schema`'s
order (tested), so the statements' column lists and casts come from the table and its
row, never written out again.

Upserts keep one row per key, with what row-by-row statements would have left: the inserted
columns of the first row and the updated columns of the last. Append-only tables are
written with COPY.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import ClassVar

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.store import schema
from app.store.codec import RecordedEvent
from domain import events as ev
from domain.state import ModelState, VersionState

_policy_encoder = msgspec.json.Encoder()
_astuple = msgspec.structs.astuple


class Row(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A row of `table`: one field per column, in the table's order."""

    table: ClassVar[sa.Table]
    # the columns an upsert overwrites on a key already present; empty: append-only
    updated: ClassVar[tuple[str, ...]] = ()


class VersionRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.versions
    updated = ("library_sha256", "retired_at", "position")

    name: str
    version: int
    format: str
    artifact_sha256: str
    library_sha256: str | None
    registered_at: datetime
    registered_by: str
    retired_at: datetime | None
    position: int


class DeploymentRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.deployments
    updated = ("champion", "challenger", "strategy", "traffic_percent", "updated_at", "position")

    name: str
    environment: str
    champion: int | None
    challenger: int | None
    strategy: str
    traffic_percent: float | None
    updated_at: datetime
    position: int


class PolicyRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.policies
    updated = ("version", "policy", "position")

    risk_tier: str
    version: int
    policy: str  # JSON text
    position: int


class HistoryRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.deployment_history

    position: int
    name: str
    environment: str
    action: str
    version: int
    champion: int | None
    challenger: int | None
    strategy: str
    traffic_percent: float | None
    actor: str
    reason: str
    recorded_at: datetime


class ApprovalRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.approvals

    position: int
    name: str
    version: int
    approver: str
    decision: str
    comment: str
    policy_version: int
    expires_at: datetime | None
    recorded_at: datetime
    revoked_reason: str | None = None


class DriftRow(Row, frozen=True, kw_only=True, gc=False):
    table = schema.drift_alerts

    position: int
    name: str
    version: int
    statistic: str
    value: float
    threshold: float
    severity: str
    feature: str | None
    environment: str | None
    recorded_at: datetime


ROW_TYPES: tuple[type[Row], ...] = (
    VersionRow,
    DeploymentRow,
    PolicyRow,
    HistoryRow,
    ApprovalRow,
    DriftRow,
)


def _conflict(row: type[Row]) -> str:
    keys = ", ".join(c.name for c in row.table.primary_key.columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in row.updated)
    return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def _unnest_upsert(row: type[Row]) -> str:
    """An upsert of one array per column, cast to the column's type."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    casts = ", ".join(
        f"${i}::{row.table.columns[f].type.compile(dialect=dialect)}[]"
        for i, f in enumerate(row.__struct_fields__, start=1)
    )
    return (
        f"INSERT INTO {row.table.name} ({', '.join(row.__struct_fields__)}) "  # noqa: S608 - fixed
        f"SELECT * FROM unnest({casts}) {_conflict(row)}"
    )


_UPSERTS = {row: _unnest_upsert(row) for row in ROW_TYPES if row.updated}
# Past this many rows an upsert goes through a temporary table filled by COPY: the
# server parses arrays for `unnest` at about half the speed.
_COPY_ABOVE = 1_000

_REVOKE = (
    "UPDATE approvals SET revoked_reason = $4 WHERE name = $1 AND version = $2 "
    "AND approver = $3 AND revoked_reason IS NULL"
)


class AppendedRows:
    """What a run of events adds: history, approvals, revocations, drift alerts, policies."""

    def __init__(self) -> None:
        self.history: list[HistoryRow] = []
        self.approvals: list[ApprovalRow] = []
        self.revocations: list[tuple[str, int, str, str]] = []  # $1-$4 of the UPDATE
        self.drift: list[DriftRow] = []
        self.policies: dict[str, PolicyRow] = {}

    async def write(self, conn: asyncpg.Connection) -> None:
        """One statement per table: COPY for the append-only ones."""
        if self.policies:
            await _upsert(conn, PolicyRow, self.policies.values())
        if self.revocations:
            await conn.executemany(_REVOKE, self.revocations)
        await _copy(conn, HistoryRow, self.history)
        await _copy(conn, ApprovalRow, self.approvals)
        await _copy(conn, DriftRow, self.drift)


class FlatRows:
    """The flat-table rows of a transaction's events, written in one statement per table.

    Appended rows are handed over (`take_appended`) after each run of events; the upserted
    versions and deployments, many events per row, are written once at the end.
    """

    def __init__(self) -> None:
        # each version an event touched: its state when first touched (the inserted
        # columns), its state now (the updated ones) and the position of the last event
        self.versions: dict[tuple[str, int], tuple[VersionState, VersionState, int]] = {}
        self.deployments: dict[tuple[str, str], DeploymentRow] = {}
        self.appended = AppendedRows()

    def take_appended(self) -> AppendedRows:
        """The rows appended since the last call; the next ones gather apart."""
        taken, self.appended = self.appended, AppendedRows()
        return taken

    def policy(self, recorded: RecordedEvent, event: ev.PolicySet) -> None:
        """The policies row a policy event leaves."""
        self.appended.policies[event.risk_tier] = PolicyRow(
            risk_tier=event.risk_tier,
            version=recorded.version,
            policy=_policy_encoder.encode(event.policy).decode(),
            position=recorded.position,
        )

    def add(self, recorded: RecordedEvent, state: ModelState) -> None:
        """The rows one model event (already folded into `state`) changes."""
        event = recorded.event
        # any event naming a version moves its row's position; a job request changes nothing
        number = getattr(event, "version", None)
        if type(number) is int and type(event) is not ev.JobRequested:
            self._touch_version(state, number, recorded.position)
        # cases by frequency in a governance log: most events match none
        match event:
            case ev.DeploymentChanged():
                self._deployment_changed(recorded, event, state)
            case ev.DriftDetected():
                self._drift_detected(recorded, event, state.name)
            case ev.VersionApproved():
                self._decided(recorded, event, state.name, "approve", event.expires_at)
            case ev.VersionRejected():
                self._decided(recorded, event, state.name, "reject", None)
            case ev.ApprovalRevoked():
                self._approval_revoked(event, state.name)

    def _touch_version(self, state: ModelState, number: int, position: int) -> None:
        version = state.versions.get(number)
        if version is not None:  # its row is built when written, from its last state
            key = (state.name, number)
            first = self.versions.get(key)
            self.versions[key] = (version if first is None else first[0], version, position)

    def _deployment_changed(
        self, recorded: RecordedEvent, event: ev.DeploymentChanged, state: ModelState
    ) -> None:
        slot = state.deployments[event.environment]
        self.deployments[(state.name, event.environment)] = DeploymentRow(
            name=state.name,
            environment=event.environment,
            champion=slot.champion,
            challenger=slot.challenger,
            strategy=slot.strategy,
            traffic_percent=slot.traffic_percent,
            updated_at=recorded.recorded_at,
            position=recorded.position,
        )
        self.appended.history.append(
            HistoryRow(
                position=recorded.position,
                name=state.name,
                environment=event.environment,
                action=event.action,
                version=event.version,
                champion=event.champion,
                challenger=event.challenger,
                strategy=event.strategy,
                traffic_percent=event.traffic_percent,
                actor=recorded.meta.actor,
                reason=event.reason,
                recorded_at=recorded.recorded_at,
            )
        )

    def _drift_detected(self, recorded: RecordedEvent, event: ev.DriftDetected, name: str) -> None:
        self.appended.drift.append(
            DriftRow(
                position=recorded.position,
                name=name,
                version=event.version,
                statistic=event.statistic,
                value=event.value,
                threshold=event.threshold,
                severity=event.severity,
                feature=event.feature,
                environment=event.environment,
                recorded_at=recorded.recorded_at,
            )
        )

    def _decided(
        self,
        recorded: RecordedEvent,
        event: ev.VersionApproved | ev.VersionRejected,
        name: str,
        decision: str,
        expires_at: datetime | None,
    ) -> None:
        self.appended.approvals.append(
            ApprovalRow(
                position=recorded.position,
                name=name,
                version=event.version,
                approver=event.approver,
                decision=decision,
                comment=event.comment,
                policy_version=event.policy_version,
                expires_at=expires_at,
                recorded_at=recorded.recorded_at,
            )
        )

    def _approval_revoked(self, event: ev.ApprovalRevoked, name: str) -> None:
        # rows handed over already are updated in the database, after they land
        self.appended.revocations.append((name, event.version, event.approver, event.reason))
        approvals = self.appended.approvals
        for i, row in enumerate(approvals):
            if (
                row.revoked_reason is None
                and row.approver == event.approver
                and row.version == event.version
                and row.name == name
            ):
                approvals[i] = msgspec.structs.replace(row, revoked_reason=event.reason)

    async def write_upserted(self, conn: asyncpg.Connection) -> None:
        """Write the versions and deployments rows gathered so far."""
        if self.versions:
            rows = [_version_row(name, *entry) for (name, _), entry in self.versions.items()]
            await _upsert(conn, VersionRow, rows)
        if self.deployments:
            await _upsert(conn, DeploymentRow, self.deployments.values())
        self.versions.clear()
        self.deployments.clear()


def _version_row(name: str, first: VersionState, last: VersionState, position: int) -> VersionRow:
    return VersionRow(
        name=name,
        version=first.version,
        format=first.format,
        artifact_sha256=first.artifact_sha256,
        library_sha256=last.compiled.library_sha256 if last.compiled else None,
        registered_at=first.registered_at,
        registered_by=first.registered_by,
        retired_at=last.retired_at,
        position=position,
    )


async def _copy(
    conn: asyncpg.Connection, row: type[Row], rows: Collection[Row], into: str | None = None
) -> None:
    if rows:
        await conn.copy_records_to_table(
            into or row.table.name, records=map(_astuple, rows), columns=row.__struct_fields__
        )


async def _upsert(conn: asyncpg.Connection, row: type[Row], rows: Collection[Row]) -> None:
    """One statement for many rows: arrays for `unnest`, or COPY into a staging table."""
    if len(rows) <= _COPY_ABOVE:
        # one list per column
        await conn.execute(_UPSERTS[row], *zip(*map(_astuple, rows), strict=True))
        return
    table, staged = row.table.name, f"{row.table.name}_staged"
    listed = ", ".join(row.__struct_fields__)
    await conn.execute(f"CREATE TEMP TABLE {staged} (LIKE {table}) ON COMMIT DROP")
    await _copy(conn, row, rows, into=staged)
    await conn.execute(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {staged} {_conflict(row)}"  # noqa: S608
    )
    await conn.execute(f"DROP TABLE {staged}")
