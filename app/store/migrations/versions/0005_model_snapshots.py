"""Per-model snapshots replace the whole-registry snapshots.

A model's folded state is kept each time its stream passes a multiple of the snapshot
interval, so what a snapshot costs grows with the model, not with the registry, and an
as-of read replays less than one interval of each model's stream. The tables are a cache
of the governance projection: an existing log keeps working without them (a model with no
snapshot replays from the start of its stream) and `projections rebuild` fills them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_REGISTRY_SNAPSHOTS = ("snapshot_policies", "snapshot_models", "registry_snapshots")


def upgrade() -> None:
    for table in _REGISTRY_SNAPSHOTS:
        op.drop_table(table)
    op.create_table(
        "model_snapshots",
        sa.Column("name", sa.Text, primary_key=True),
        # the model stream's version after the event the state includes last
        sa.Column("stream_version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("state", pg.BYTEA, nullable=False),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    op.drop_table("model_snapshots")
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
    # the governance projection must be rebuilt to fill them again
