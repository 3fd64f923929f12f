"""Governance views: model states, versions, deployments, approvals, drift, policies.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_VIEWS = (
    "model_states",
    "versions",
    "deployments",
    "deployment_history",
    "approvals",
    "drift_alerts",
    "policies",
    "registry_snapshots",
    "snapshot_models",
    "snapshot_policies",
)


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "model_states",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("risk_tier", sa.Text, nullable=False),
        sa.Column("state", pg.BYTEA, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("artifact_sha256", sa.Text, nullable=False),
        sa.Column("library_sha256", sa.Text),
        sa.Column("registered_at", ts, nullable=False),
        sa.Column("registered_by", sa.Text, nullable=False),
        sa.Column("retired_at", ts),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("environment", sa.Text, primary_key=True),
        sa.Column("champion", sa.Integer),
        sa.Column("challenger", sa.Integer),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("traffic_percent", sa.Float),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deployment_history",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("champion", sa.Integer),
        sa.Column("challenger", sa.Integer),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("traffic_percent", sa.Float),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
    )
    op.create_index("deployment_history_name_idx", "deployment_history", ["name", "position"])
    op.create_table(
        "approvals",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("approver", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("expires_at", ts),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Column("revoked_reason", sa.Text),
    )
    op.create_index("approvals_name_version_idx", "approvals", ["name", "version"])
    op.create_table(
        "drift_alerts",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("statistic", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("feature", sa.Text),
        sa.Column("environment", sa.Text),
        sa.Column("recorded_at", ts, nullable=False),
    )
    op.create_index("drift_alerts_name_idx", "drift_alerts", ["name", "position"])
    op.create_table(
        "policies",
        sa.Column("risk_tier", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("policy", pg.JSON, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    # Snapshots of the whole registry at fixed intervals of the log, so an as-of read
    # replays at most one interval instead of the whole log. A cache, kept by the projection.
    op.create_table(
        "registry_snapshots",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("models", sa.Integer, nullable=False),
    )
    op.create_table(
        "snapshot_models",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("state", pg.BYTEA, nullable=False),
    )
    op.create_table(
        "snapshot_policies",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("risk_tier", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("policy", pg.JSON, nullable=False),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    for table in reversed(_VIEWS):
        op.drop_table(table)
