"""Outcome labels: what was observed for a prediction, often days after it was scored (the
performance job compares them with the scores).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "outcomes",
        sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("label", sa.Float, nullable=False),
        sa.Column("observed_at", ts, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Index("outcomes_version_idx", "name", "environment", "version", "recorded_at"),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    op.drop_table("outcomes")
